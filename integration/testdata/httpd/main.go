// Command httpd is a tiny static HTTP server for the container test: it
// answers every request with a fixed greeting. Built CGO-free and copied
// into a FROM scratch image next to the wgmesh image.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	body := flag.String("say", "hello", "response body")
	flag.Parse()
	log.Fatal(http.ListenAndServe(*addr, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, *body)
	})))
}
