package forward

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// echo copies a connection back to itself, then half-closes, so a client
// that half-closes its side reads everything back and then EOF.
func echo(c *net.TCPConn) {
	io.Copy(c, c)
	c.CloseWrite()
}

// startTCPForward relays a new loopback listener to target through a
// net.Dialer and returns the listener, the server and a function that
// cancels it and returns ServeTCP's result.
func startTCPForward(t *testing.T, network, listen, target string, d Dialer) (net.Listener, *tcpServer, func() error) {
	t.Helper()
	ln := listenTCP(t, network, listen)
	ctx, cancel := context.WithCancel(t.Context())
	s := newTCPServer(d, target, newTestLogger(t).Logger)
	wait := serveResult(t, func() error { return s.serve(ctx, ln) })
	stop := func() error {
		cancel()
		return wait()
	}
	t.Cleanup(func() { cancel() })
	return ln, s, stop
}

func dialTCP(t *testing.T, addr net.Addr) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return c.(*net.TCPConn)
}

// roundTrip sends data through c, half-closes, and checks that exactly the
// same bytes come back.
func roundTrip(c *net.TCPConn, data []byte) error {
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		errc <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if werr := <-errc; werr != nil {
		return fmt.Errorf("write: %w", werr)
	}
	if err != nil {
		return fmt.Errorf("read after %d bytes: %w", n, err)
	}
	if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
		return fmt.Errorf("got %d bytes back with sha256 %x, sent %d bytes with sha256 %x", n, h.Sum(nil), len(data), want)
	}
	return nil
}

func TestTCPLargeTransferIsExact(t *testing.T) {
	checkGoroutines(t)
	target := startTCPServer(t, "tcp", "127.0.0.1:0", echo)
	ln, _, stop := startTCPForward(t, "tcp", "127.0.0.1:0", target.Addr().String(), &net.Dialer{})

	data := make([]byte, 10<<20)
	rand.Read(data)
	if err := roundTrip(dialTCP(t, ln.Addr()), data); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatalf("ServeTCP: %v", err)
	}
}

// TestTCPLargeTransferThroughBuffer takes the copy path used for userspace
// conns, which have no kernel splice, by hiding the *net.TCPConn type.
func TestTCPLargeTransferThroughBuffer(t *testing.T) {
	checkGoroutines(t)
	target := startTCPServer(t, "tcp", "127.0.0.1:0", echo)
	var d net.Dialer
	wrap := dialerFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return struct {
			net.Conn
			closeWriter
		}{c, c.(*net.TCPConn)}, nil
	})
	ln, _, stop := startTCPForward(t, "tcp", "127.0.0.1:0", target.Addr().String(), wrap)

	data := make([]byte, 10<<20)
	rand.Read(data)
	if err := roundTrip(dialTCP(t, ln.Addr()), data); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatalf("ServeTCP: %v", err)
	}
}

func TestTCPHalfClose(t *testing.T) {
	checkGoroutines(t)
	// The server replies only once the client has finished sending.
	target := startTCPServer(t, "tcp", "127.0.0.1:0", func(c *net.TCPConn) {
		b, err := io.ReadAll(c)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "got %d bytes: %s", len(b), b)
	})
	ln, _, stop := startTCPForward(t, "tcp", "127.0.0.1:0", target.Addr().String(), &net.Dialer{})

	c := dialTCP(t, ln.Addr())
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	reply, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading reply: %v", err)
	}
	if got, want := string(reply), "got 5 bytes: hello"; got != want {
		t.Errorf("reply = %q, want %q", got, want)
	}
	if err := stop(); err != nil {
		t.Fatalf("ServeTCP: %v", err)
	}
}

func TestTCPConcurrentConnections(t *testing.T) {
	checkGoroutines(t)
	target := startTCPServer(t, "tcp", "127.0.0.1:0", echo)
	ln, s, stop := startTCPForward(t, "tcp", "127.0.0.1:0", target.Addr().String(), &net.Dialer{})

	const conns = 64
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		wg.Go(func() {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			data := make([]byte, 64<<10+i)
			rand.Read(data)
			if err := roundTrip(c.(*net.TCPConn), data); err != nil {
				errs <- fmt.Errorf("conn %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitFor(t, "relayed conns to close", func() bool { return s.activeConns() == 0 })
	if err := stop(); err != nil {
		t.Fatalf("ServeTCP: %v", err)
	}
}

func TestTCPDialFailureClosesClient(t *testing.T) {
	checkGoroutines(t)
	ln := listenTCP(t, "tcp", "127.0.0.1:0")
	log := newTestLogger(t)
	fail := dialerFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
		return nil, errors.New("no route to beta")
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	wait := serveResult(t, func() error { return ServeTCP(ctx, ln, fail, "beta:80", log.Logger) })

	c := dialTCP(t, ln.Addr())
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("client read = %d, %v; want EOF", n, err)
	}
	if !log.contains(`msg="dial failed, closing client connection"`) || !log.contains("no route to beta") {
		t.Errorf("log does not report the dial failure:\n%s", log)
	}
	cancel()
	if err := wait(); err != nil {
		t.Fatalf("ServeTCP: %v", err)
	}
}

// TestTCPDialAbortedOnShutdown checks that a hanging dial is abandoned
// when ServeTCP stops, instead of holding it for the whole dial timeout.
func TestTCPDialAbortedOnShutdown(t *testing.T) {
	checkGoroutines(t)
	dialing := make(chan struct{})
	hang := dialerFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
		close(dialing)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	ln, _, stop := startTCPForward(t, "tcp", "127.0.0.1:0", "beta:80", hang)
	dialTCP(t, ln.Addr())
	<-dialing
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("ServeTCP: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("shutdown took %v while a dial hung", d)
	}
}

func TestTCPShutdownClosesConnections(t *testing.T) {
	checkGoroutines(t)
	target := startTCPServer(t, "tcp", "127.0.0.1:0", echo)
	ln, s, stop := startTCPForward(t, "tcp", "127.0.0.1:0", target.Addr().String(), &net.Dialer{})

	var clients []*net.TCPConn
	for range 8 {
		c := dialTCP(t, ln.Addr())
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	if n := s.activeConns(); n != 16 {
		t.Errorf("activeConns = %d, want 16 (client and target side of 8)", n)
	}
	if err := stop(); err != nil {
		t.Fatalf("ServeTCP: %v", err)
	}
	for i, c := range clients {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("client %d: read succeeded after shutdown", i)
		}
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("listener still accepts after shutdown")
	}
}

func TestTCPReturnsWhenListenerClosed(t *testing.T) {
	checkGoroutines(t)
	ln := listenTCP(t, "tcp", "127.0.0.1:0")
	wait := serveResult(t, func() error { return ServeTCP(t.Context(), ln, &net.Dialer{}, "127.0.0.1:1", nil) })
	ln.Close()
	if err := wait(); err != nil {
		t.Fatalf("ServeTCP = %v, want nil", err)
	}
}

func TestTCPAcceptErrorIsReturned(t *testing.T) {
	boom := errors.New("listener broke")
	err := ServeTCP(t.Context(), failingListener{boom}, &net.Dialer{}, "127.0.0.1:1", nil)
	if !errors.Is(err, boom) {
		t.Fatalf("ServeTCP = %v, want it to wrap %v", err, boom)
	}
}

type failingListener struct{ err error }

func (l failingListener) Accept() (net.Conn, error) { return nil, l.err }
func (l failingListener) Close() error              { return nil }
func (l failingListener) Addr() net.Addr            { return &net.TCPAddr{} }

func TestTCPIPv6(t *testing.T) {
	ipv6Loopback(t)
	checkGoroutines(t)
	target := startTCPServer(t, "tcp6", "[::1]:0", echo)
	ln, _, stop := startTCPForward(t, "tcp6", "[::1]:0", target.Addr().String(), &net.Dialer{})
	if err := roundTrip(dialTCP(t, ln.Addr()), []byte("over ipv6")); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatalf("ServeTCP: %v", err)
	}
}

// closeWriter is the half-close ability netutil.Join passes on.
type closeWriter interface {
	CloseWrite() error
}
