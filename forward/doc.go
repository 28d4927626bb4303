// Package forward relays TCP connections and UDP datagrams between a listener
// and a target, for the --forward and --expose flags of wgmesh.
//
// In rootless (netstack) mode the mesh lives in a userspace network stack that
// host programs cannot reach directly. A forward bridges the two worlds:
//
//	--forward tcp:127.0.0.1:8080=beta:80   host listener -> target in the mesh
//	--expose  tcp:22=127.0.0.1:22          mesh listener -> target on the host
//
// The package knows nothing about meshes. Callers create the listener on one
// side and pass a [Dialer] for the other, so one implementation serves both
// directions and is tested on plain loopback sockets.
//
// # Usage
//
// Parse the flag values first, so mistakes are reported before anything binds:
//
//	spec, err := forward.ParseForward("tcp:127.0.0.1:8080=beta:80")
//	if err != nil {
//		return err // names the flag, the value and the expected form
//	}
//	// check spec.TargetHost() names a member or a mesh address, then:
//	ln, err := net.Listen(spec.Proto, spec.Listen)
//	if err != nil {
//		return fmt.Errorf("%s: %w", spec, err) // "port in use" surfaces at start-up
//	}
//	go forward.ServeTCP(ctx, ln, meshDialer, spec.Target, log.With("spec", spec.String()))
//
// For UDP, create a net.PacketConn and call [ServeUDP] instead.
//
// [ServeTCP] and [ServeUDP] take ownership of the listener: they close it when
// they return, close every relayed connection, and wait for all of their
// goroutines, so cancelling the context leaves nothing running.
package forward
