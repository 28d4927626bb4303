package forward

import (
	"testing"
)

func TestParseForward(t *testing.T) {
	tests := []struct {
		in                    string
		proto, listen, target string
		targetHost            string
		str                   string
	}{
		{"tcp:127.0.0.1:8080=beta:80", "tcp", "127.0.0.1:8080", "beta:80", "beta", "--forward tcp:127.0.0.1:8080=beta:80"},
		{"udp:127.0.0.1:0=beta:53", "udp", "127.0.0.1:0", "beta:53", "beta", "--forward udp:127.0.0.1:0=beta:53"},
		{"udp:127.0.0.1:5353=10.42.0.3:53", "udp", "127.0.0.1:5353", "10.42.0.3:53", "10.42.0.3", "--forward udp:127.0.0.1:5353=10.42.0.3:53"},
		{"tcp:[::1]:8080=beta.mesh:80", "tcp", "[::1]:8080", "beta.mesh:80", "beta.mesh", "--forward tcp:[::1]:8080=beta.mesh:80"},
		{"tcp:localhost:1=[fd42:42::3]:65535", "tcp", "localhost:1", "[fd42:42::3]:65535", "fd42:42::3", "--forward tcp:localhost:1=[fd42:42::3]:65535"},
		{"TCP:0.0.0.0:08080=my_host-1:0443", "tcp", "0.0.0.0:8080", "my_host-1:443", "my_host-1", "--forward tcp:0.0.0.0:8080=my_host-1:443"},
		{"udp:[fe80::1%lo]:53=beta:53", "udp", "[fe80::1%lo]:53", "beta:53", "beta", "--forward udp:[fe80::1%lo]:53=beta:53"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			s, err := ParseForward(tt.in)
			if err != nil {
				t.Fatalf("ParseForward(%q): %v", tt.in, err)
			}
			want := Spec{Proto: tt.proto, Listen: tt.listen, Target: tt.target, Flag: "--forward", Raw: tt.in}
			if s != want {
				t.Errorf("ParseForward(%q) = %+v, want %+v", tt.in, s, want)
			}
			if got := s.TargetHost(); got != tt.targetHost {
				t.Errorf("TargetHost() = %q, want %q", got, tt.targetHost)
			}
			if got := s.String(); got != tt.str {
				t.Errorf("String() = %q, want %q", got, tt.str)
			}
		})
	}
}

func TestParseExpose(t *testing.T) {
	tests := []struct {
		in                    string
		proto, listen, target string
		str                   string
	}{
		{"tcp:22=127.0.0.1:22", "tcp", ":22", "127.0.0.1:22", "--expose tcp:22=127.0.0.1:22"},
		{"udp:53=127.0.0.1:5353", "udp", ":53", "127.0.0.1:5353", "--expose udp:53=127.0.0.1:5353"},
		{"tcp:8443=[::1]:443", "tcp", ":8443", "[::1]:443", "--expose tcp:8443=[::1]:443"},
		{"tcp:80=localhost:8080", "tcp", ":80", "localhost:8080", "--expose tcp:80=localhost:8080"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			s, err := ParseExpose(tt.in)
			if err != nil {
				t.Fatalf("ParseExpose(%q): %v", tt.in, err)
			}
			want := Spec{Proto: tt.proto, Listen: tt.listen, Target: tt.target, Flag: "--expose", Raw: tt.in}
			if s != want {
				t.Errorf("ParseExpose(%q) = %+v, want %+v", tt.in, s, want)
			}
			if got := s.String(); got != tt.str {
				t.Errorf("String() = %q, want %q", got, tt.str)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		parse func(string) (Spec, error)
		in    string
		want  string
	}{
		{ParseForward, "tcp:8080=beta:80",
			`--forward "tcp:8080=beta:80": listen address must be HOST:PORT, e.g. tcp:127.0.0.1:8080=beta:80`},
		{ParseForward, "",
			`--forward "": empty value, want PROTO:HOST:PORT=TARGET, e.g. tcp:127.0.0.1:8080=beta:80`},
		{ParseForward, "tcp:127.0.0.1:8080",
			`--forward "tcp:127.0.0.1:8080": missing =TARGET, want PROTO:HOST:PORT=TARGET, e.g. tcp:127.0.0.1:8080=beta:80`},
		{ParseForward, "127.0.0.1:8080=beta:80",
			`--forward "127.0.0.1:8080=beta:80": unknown protocol "127.0.0.1", want tcp or udp, e.g. tcp:127.0.0.1:8080=beta:80`},
		{ParseForward, "sctp:127.0.0.1:8080=beta:80",
			`--forward "sctp:127.0.0.1:8080=beta:80": unknown protocol "sctp", want tcp or udp, e.g. tcp:127.0.0.1:8080=beta:80`},
		{ParseForward, "udp:127.0.0.1:0=beta:0",
			`--forward "udp:127.0.0.1:0=beta:0": target port "0" must be a number from 1 to 65535, e.g. udp:127.0.0.1:5353=beta:53`},
		{ParseForward, "tcp:127.0.0.1:65536=beta:80",
			`--forward "tcp:127.0.0.1:65536=beta:80": listen port "65536" must be a number from 1 to 65535, e.g. tcp:127.0.0.1:8080=beta:80`},
		{ParseForward, "tcp:127.0.0.1:http=beta:80",
			`--forward "tcp:127.0.0.1:http=beta:80": listen port "http" must be a number from 1 to 65535, e.g. tcp:127.0.0.1:8080=beta:80`},
		{ParseForward, "tcp:::1:8080=beta:80",
			`--forward "tcp:::1:8080=beta:80": listen address needs brackets around an IPv6 host, as [::1]:PORT, e.g. tcp:127.0.0.1:8080=beta:80`},
		{ParseForward, "tcp:127.0.0.1:8080=beta",
			`--forward "tcp:127.0.0.1:8080=beta": target address must be HOST:PORT, e.g. tcp:127.0.0.1:8080=beta:80`},
		{ParseForward, "tcp:127.0.0.1:8080=:80",
			`--forward "tcp:127.0.0.1:8080=:80": target address must be HOST:PORT, e.g. tcp:127.0.0.1:8080=beta:80`},
		{ParseForward, "tcp:127.0.0.1:8080=beta:-1",
			`--forward "tcp:127.0.0.1:8080=beta:-1": target port "-1" must be a number from 1 to 65535, e.g. tcp:127.0.0.1:8080=beta:80`},
		{ParseForward, "tcp:127.0.0.1:8080=10.42.0.300:80",
			`--forward "tcp:127.0.0.1:8080=10.42.0.300:80": target host "10.42.0.300" is not an IP address or host name, e.g. tcp:127.0.0.1:8080=beta:80`},
		{ParseForward, "tcp:127.0.0.1:8080=be/ta:80",
			`--forward "tcp:127.0.0.1:8080=be/ta:80": target host "be/ta" is not an IP address or host name, e.g. tcp:127.0.0.1:8080=beta:80`},
		{ParseForward, "tcp:127.0.0.1:8080=a=b:80",
			`--forward "tcp:127.0.0.1:8080=a=b:80": target host "a=b" is not an IP address or host name, e.g. tcp:127.0.0.1:8080=beta:80`},
		{ParseForward, "tcp:127.0.0.1:8080 =beta:80",
			`--forward "tcp:127.0.0.1:8080 =beta:80": must not contain spaces or control characters, e.g. tcp:127.0.0.1:8080=beta:80`},
		{ParseForward, "tcp:127.0.0.1:8080=beta:80\nx",
			`--forward "tcp:127.0.0.1:8080=beta:80\nx": must not contain spaces or control characters, e.g. tcp:127.0.0.1:8080=beta:80`},
		{ParseExpose, "tcp:127.0.0.1:22=127.0.0.1:22",
			`--expose "tcp:127.0.0.1:22=127.0.0.1:22": mesh side takes only a PORT: the listener binds the node's mesh addresses, e.g. tcp:22=127.0.0.1:22`},
		{ParseExpose, "udp:=127.0.0.1:5353",
			`--expose "udp:=127.0.0.1:5353": mesh port "" must be a number from 1 to 65535, e.g. udp:53=127.0.0.1:5353`},
		{ParseExpose, "tcp:22",
			`--expose "tcp:22": missing =TARGET, want PROTO:PORT=TARGET, e.g. tcp:22=127.0.0.1:22`},
		{ParseExpose, "tcp:22=127.0.0.1",
			`--expose "tcp:22=127.0.0.1": target address must be HOST:PORT, e.g. tcp:22=127.0.0.1:22`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := tt.parse(tt.in)
			if err == nil {
				t.Fatalf("parse(%q) succeeded, want error %q", tt.in, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("parse(%q) error\n got: %s\nwant: %s", tt.in, err, tt.want)
			}
		})
	}
}
