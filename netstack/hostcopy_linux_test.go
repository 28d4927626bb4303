package netstack

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// hostPair returns both ends of a loopback TCP connection: app, as a
// program on the host holds it, and relay, the socket wgmesh relays.
func hostPair(t *testing.T) (app, relay *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	app, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	relay, err = ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close(); relay.Close() })
	return app, relay
}

// hostJoin relays between a host socket and a stack conn the way
// netutil.Join does, through the conn's own copies, half-closing on EOF.
func hostJoin(t *testing.T, host *net.TCPConn, mesh net.Conn) <-chan error {
	t.Helper()
	c, ok := mesh.(*tcpConn)
	if !ok {
		t.Fatalf("stack conn is a %T, want *tcpConn", mesh)
	}
	errs := make(chan error, 2)
	go func() {
		_, err := c.ReadFromTCP(host)
		if err == nil {
			err = c.CloseWrite()
		}
		errs <- err
	}()
	go func() {
		_, err := c.WriteToTCP(host)
		if err == nil {
			err = host.CloseWrite()
		}
		errs <- err
	}()
	return errs
}

type streamSum struct {
	sum [32]byte
	n   int64
	err error
}

// sendRandom writes n pseudo-random bytes to w in odd-sized writes, then
// half-closes it.
func sendRandom(w *net.TCPConn, n int64, seed uint64) streamSum {
	rng := rand.New(rand.NewPCG(seed, 11))
	h := sha256.New()
	buf := make([]byte, 300<<10)
	var done int64
	for done < n {
		k := min(int64(1+rng.IntN(len(buf))), n-done)
		chunk := buf[:k]
		for i := range chunk {
			chunk[i] = byte(rng.Uint32())
		}
		h.Write(chunk)
		if _, err := w.Write(chunk); err != nil {
			return streamSum{n: done, err: err}
		}
		done += k
	}
	var s streamSum
	copy(s.sum[:], h.Sum(nil))
	s.n, s.err = done, w.CloseWrite()
	return s
}

// receiveAll reads r to EOF, slowly at first so that the relay's writes
// to it find its socket full.
func receiveAll(r *net.TCPConn) streamSum {
	h := sha256.New()
	small := make([]byte, 1000)
	var s streamSum
	for range 200 {
		n, err := r.Read(small)
		h.Write(small[:n])
		s.n += int64(n)
		if err != nil {
			if err != io.EOF {
				s.err = err
			}
			copy(s.sum[:], h.Sum(nil))
			return s
		}
		time.Sleep(time.Millisecond)
	}
	n, err := io.CopyBuffer(h, r, make([]byte, 128<<10))
	s.n += n
	s.err = err
	copy(s.sum[:], h.Sum(nil))
	return s
}

// TestHostCopyExact moves data both ways at once between two host programs
// through two stacks, each stack conn copying to and from its host socket
// without a buffer, and checks every byte and the half-closes.
func TestHostCopyExact(t *testing.T) {
	p := newWGPair(t, false)
	client, server := p.stream(t)
	appA, relayA := hostPair(t)
	appB, relayB := hostPair(t)
	deadline := time.Now().Add(2 * time.Minute)
	for _, c := range []*net.TCPConn{appA, appB, relayA, relayB} {
		c.SetDeadline(deadline)
	}
	joinA := hostJoin(t, relayA, client)
	joinB := hostJoin(t, relayB, server)

	const ab, ba = 96 << 20, 40<<20 + 12345
	sendAB, sendBA := make(chan streamSum, 1), make(chan streamSum, 1)
	recvAB, recvBA := make(chan streamSum, 1), make(chan streamSum, 1)
	go func() { sendAB <- sendRandom(appA, ab, 1) }()
	go func() { sendBA <- sendRandom(appB, ba, 2) }()
	go func() { recvAB <- receiveAll(appB) }()
	go func() { recvBA <- receiveAll(appA) }()
	for _, dir := range [][2]chan streamSum{{sendAB, recvAB}, {sendBA, recvBA}} {
		snd, rcv := <-dir[0], <-dir[1]
		if snd.err != nil || rcv.err != nil {
			t.Fatalf("send: %d bytes, %v; receive: %d bytes, %v", snd.n, snd.err, rcv.n, rcv.err)
		}
		if rcv.n != snd.n || rcv.sum != snd.sum {
			t.Fatalf("received %d bytes (sha256 %x), sent %d (%x)", rcv.n, rcv.sum[:4], snd.n, snd.sum[:4])
		}
	}
	for _, errs := range []<-chan error{joinA, joinA, joinB, joinB} {
		if err := <-errs; err != nil {
			t.Errorf("relay: %v", err)
		}
	}
}

// TestHostCopyClose closes the stack conn while its copy to a host socket
// that nobody reads is blocked, and while its copy from a quiet host
// socket waits: both return, and nothing else is disturbed.
func TestHostCopyClose(t *testing.T) {
	p := newWGPair(t, false)
	client, server := p.stream(t)
	_, relayA := hostPair(t)
	c := client.(*tcpConn)
	toHost := make(chan error, 1)
	fromHost := make(chan error, 1)
	go func() { _, err := c.WriteToTCP(relayA); toHost <- err }()
	go func() { _, err := c.ReadFromTCP(relayA); fromHost <- err }()
	// Fill the host socket and the stack's buffers behind it.
	buf := make([]byte, 1<<20)
	server.SetWriteDeadline(time.Now().Add(3 * time.Second))
	for {
		if _, err := server.Write(buf); err != nil {
			break
		}
	}
	client.Close()
	relayA.Close() // as netutil.Join does on an error: ends the waits on the socket
	for name, ch := range map[string]chan error{"WriteToTCP": toHost, "ReadFromTCP": fromHost} {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not return after Close", name)
		}
	}
}

// TestHostPayloadOrder reads a head and then a socket's bytes in pieces,
// as gVisor does, stopping short of the end: what is left of the head
// stays in it and the socket keeps what was not asked for.
func TestHostPayloadOrder(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if _, err := unix.Write(fds[1], []byte("defghij")); err != nil {
		t.Fatal(err)
	}

	p := hostPayload{fd: fds[0], head: []byte("abc"), left: 7}
	if p.Len() != 10 {
		t.Fatalf("Len = %d, want 10", p.Len())
	}
	two := make([]byte, 2)
	var got []byte
	n, err := p.Read(two)
	got = append(got, two[:n]...)
	if err != nil || string(got) != "ab" || string(p.head) != "c" {
		t.Fatalf("first read %q, %v; head left %q", got, err, p.head)
	}
	for string(got) != "abcdef" {
		n, err := p.Read(two[:min(2, 6-len(got))])
		if err != nil {
			t.Fatalf("read after %q: %v", got, err)
		}
		got = append(got, two[:n]...)
	}
	if len(p.head) != 0 || p.left != 4 || p.Len() != 4 {
		t.Fatalf("after 6 bytes: head %q, left %d, Len %d; want empty, 4, 4", p.head, p.left, p.Len())
	}
	rest := make([]byte, 16)
	n, err = unix.Read(fds[0], rest)
	if err != nil || string(rest[:n]) != "ghij" {
		t.Fatalf("the socket kept %q, %v; want %q", rest[:n], err, "ghij")
	}

	// A socket that holds fewer bytes than left is an error, not a short read.
	p = hostPayload{fd: fds[0], left: 3}
	if _, err := p.Read(rest); err != errShortSocket || p.err != errShortSocket {
		t.Fatalf("read of an empty socket: %v (p.err %v), want errShortSocket", err, p.err)
	}
}

// TestHostCopyMessages sends requests of sizes around the first read's
// size through the two stacks and checks each reply, byte for byte: the
// round that fits one read and the round that asks the socket for more.
func TestHostCopyMessages(t *testing.T) {
	p := newWGPair(t, false)
	client, server := p.stream(t)
	appA, relayA := hostPair(t)
	appB, relayB := hostPair(t)
	deadline := time.Now().Add(time.Minute)
	for _, c := range []*net.TCPConn{appA, appB, relayA, relayB} {
		c.SetDeadline(deadline)
	}
	joinA := hostJoin(t, relayA, client)
	joinB := hostJoin(t, relayB, server)

	echoed := make(chan error, 1)
	go func() { // B's program echoes every byte
		_, err := io.Copy(appB, appB)
		if err == nil {
			err = appB.CloseWrite()
		}
		echoed <- err
	}()
	rng := rand.New(rand.NewPCG(3, 4))
	sizes := []int{1, 2, headBytes - 1, headBytes, headBytes + 1, 2 * headBytes, 3*headBytes + 7, 100 << 10}
	for i := range 200 {
		size := sizes[i%len(sizes)]
		msg := make([]byte, size)
		for j := range msg {
			msg[j] = byte(rng.Uint32())
		}
		if _, err := appA.Write(msg); err != nil {
			t.Fatalf("request %d (%d bytes): %v", i, size, err)
		}
		reply := make([]byte, size)
		if _, err := io.ReadFull(appA, reply); err != nil {
			t.Fatalf("reply %d (%d bytes): %v", i, size, err)
		}
		if !bytes.Equal(reply, msg) {
			t.Fatalf("reply %d (%d bytes) differs from the request", i, size)
		}
	}
	appA.CloseWrite()
	if n, err := appA.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after the last reply: %d bytes, %v; want the echo's end of stream", n, err)
	}
	if err := <-echoed; err != nil {
		t.Errorf("echo: %v", err)
	}
	for _, errs := range []<-chan error{joinA, joinA, joinB, joinB} {
		if err := <-errs; err != nil {
			t.Errorf("relay: %v", err)
		}
	}
}
