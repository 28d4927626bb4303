package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// version is set by `make release` and `make deb` from `git describe`
// (-ldflags -X main.version=...). Without it, `wgmesh version` reports the
// module version Go recorded in the build: a tag for `go install
// ...@vX.Y.Z`, a pseudo-version from the VCS for a build in a clone.
var version string

// Modules whose versions `wgmesh version` reports beside its own.
const (
	wireguardModule = "golang.zx2c4.com/wireguard"
	gvisorModule    = "gvisor.dev/gvisor"
)

// buildVersions are the facts `wgmesh version` prints.
type buildVersions struct {
	WGMesh, Go, Platform, WireGuard, GVisor string
}

func readBuildVersions() buildVersions {
	v := buildVersions{WGMesh: version, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH,
		WireGuard: "unknown", GVisor: "unknown"}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		if v.WGMesh == "" {
			v.WGMesh = "unknown"
		}
		return v
	}
	if v.WGMesh == "" {
		v.WGMesh = bi.Main.Version
		if v.WGMesh == "" || v.WGMesh == "(devel)" {
			v.WGMesh = "devel"
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.modified" && s.Value == "true" && v.WGMesh == "devel" {
				v.WGMesh = "devel+dirty"
			}
		}
	}
	for _, d := range bi.Deps {
		m := d
		if d.Replace != nil {
			m = d.Replace
		}
		switch d.Path {
		case wireguardModule:
			v.WireGuard = m.Version
		case gvisorModule:
			v.GVisor = m.Version
		}
	}
	return v
}

func (e *env) versionCommand() *cli.Command {
	return &cli.Command{
		Name:      "version",
		Usage:     "print the version of wgmesh, of Go and of the embedded wireguard-go and gVisor",
		ArgsUsage: " ",
		Action: func(c *cli.Context) error {
			if _, err := args(c); err != nil {
				return err
			}
			v := readBuildVersions()
			_, err := fmt.Fprintf(e.stdout, "wgmesh %s\ngo %s %s\nwireguard-go %s\ngvisor %s\n",
				v.WGMesh, v.Go, v.Platform, v.WireGuard, v.GVisor)
			return err
		},
	}
}
