//go:build !unix

package procs

import "time"

// processCPU is not implemented here; the governor does not run.
func processCPU() (time.Duration, bool) { return 0, false }
