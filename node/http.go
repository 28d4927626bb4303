package node

import (
	"net/http"
	"time"
)

// HTTPClient returns an HTTP client whose connections go through the mesh,
// so URLs may name members: http://beta/ or http://beta.mesh:8080/. It
// works in both modes; in netstack mode it is the only way an HTTP client
// in this process reaches the mesh. The node must be up.
func (n *Node) HTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:           n.Dial,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          100,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
			// Proxies from the environment make no sense inside the mesh.
			Proxy: nil,
		},
		Timeout: 60 * time.Second,
	}
}
