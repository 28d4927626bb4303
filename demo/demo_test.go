package demo

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := Run(t.Context(), &out, log); err != nil {
		t.Fatalf("demo failed: %v\noutput:\n%s", err, out.String())
	}
	text := out.String()
	names := []string{"alpha", "beta", "gamma"}
	for _, from := range names {
		for _, to := range names {
			if from == to {
				continue
			}
			want := fmt.Sprintf("%-5s -> %-5s  ok", from, to)
			if !strings.Contains(text, want) {
				t.Errorf("output lacks %q", want)
			}
		}
	}
	if strings.Count(text, "NAME") != 3 || strings.Contains(text, "never") {
		t.Errorf("want three status tables with a handshake to every member:\n%s", text)
	}
	if t.Failed() {
		t.Logf("output:\n%s", text)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
