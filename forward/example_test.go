package forward_test

import (
	"context"
	"fmt"
	"io"
	"net"

	"github.com/wgmesh/wgmesh/forward"
)

func ExampleParseForward() {
	spec, err := forward.ParseForward("tcp:[::1]:8080=beta.mesh:80")
	if err != nil {
		panic(err)
	}
	fmt.Println(spec.Proto, spec.Listen, spec.Target, spec.TargetHost())
	fmt.Println(spec)

	_, err = forward.ParseForward("tcp:8080=beta:80")
	fmt.Println(err)
	// Output:
	// tcp [::1]:8080 beta.mesh:80 beta.mesh
	// --forward tcp:[::1]:8080=beta.mesh:80
	// --forward "tcp:8080=beta:80": listen address must be HOST:PORT, e.g. tcp:127.0.0.1:8080=beta:80
}

func ExampleParseExpose() {
	spec, err := forward.ParseExpose("udp:53=127.0.0.1:5353")
	if err != nil {
		panic(err)
	}
	fmt.Println(spec.Proto, spec.Listen, spec.Target)
	// Output:
	// udp :53 127.0.0.1:5353
}

// ExampleServeTCP relays a loopback listener to a loopback target. In wgmesh
// one side is the mesh: the dialer (for --forward) or the listener (for
// --expose) comes from the userspace network stack.
func ExampleServeTCP() {
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer target.Close()
	go func() {
		c, err := target.Accept()
		if err != nil {
			return
		}
		io.WriteString(c, "hello from the target")
		c.Close()
	}()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- forward.ServeTCP(ctx, ln, &net.Dialer{}, target.Addr().String(), nil) }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		panic(err)
	}
	b, _ := io.ReadAll(c)
	c.Close()
	fmt.Println(string(b))

	cancel()
	fmt.Println("ServeTCP returned", <-done)
	// Output:
	// hello from the target
	// ServeTCP returned <nil>
}
