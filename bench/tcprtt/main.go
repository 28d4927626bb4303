// Command tcprtt measures the round-trip time of 1-byte TCP ping-pong, for
// bench/netstack_pair.sh.
//
//	tcprtt -serve ADDR            echo every byte back
//	tcprtt -to ADDR [-n 2000]     print p50 and p99 in microseconds
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"time"
)

func main() {
	serve := flag.String("serve", "", "listen on this address and echo")
	to := flag.String("to", "", "ping this address")
	n := flag.Int("n", 2000, "round trips")
	flag.Parse()
	var err error
	switch {
	case *serve != "":
		err = runServer(*serve)
	case *to != "":
		err = runClient(*to, *n)
	default:
		err = fmt.Errorf("give -serve or -to")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcprtt:", err)
		os.Exit(1)
	}
}

func runServer(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

func runClient(addr string, n int) error {
	if n < 1 || n > 1_000_000 {
		return fmt.Errorf("-n %d: want 1..1000000", n)
	}
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(2 * time.Minute)); err != nil {
		return err
	}
	b := []byte{1}
	rtts := make([]time.Duration, 0, n)
	// A few unmeasured round trips settle the path first.
	for i := -10; i < n; i++ {
		t0 := time.Now()
		if _, err := c.Write(b); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return err
		}
		if i >= 0 {
			rtts = append(rtts, time.Since(t0))
		}
	}
	slices.Sort(rtts)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	fmt.Printf("%.1f %.1f\n", us(rtts[len(rtts)/2]), us(rtts[len(rtts)*99/100]))
	return nil
}
