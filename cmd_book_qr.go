package main

import (
	"fmt"
	"strings"

	"github.com/skip2/go-qrcode"
	"github.com/urfave/cli/v2"

	"github.com/wgmesh/wgmesh/internal/fileutil"
)

// exportQR shows a member's wg-quick config as a QR code, the way the
// WireGuard phone apps import a tunnel: on the terminal, or as a PNG.
func (e *env) exportQR(c *cli.Context, name string, conf []byte, withKey bool) error {
	q, err := qrcode.New(string(conf), qrcode.Medium)
	if err != nil {
		// Low recovery holds about a fifth more; a big mesh may still not fit.
		if q, err = qrcode.New(string(conf), qrcode.Low); err != nil {
			return fmt.Errorf("the wg-quick config of %s is %d bytes, too long for a QR code (%v); copy the file instead (book export without --qr)", name, len(conf), err)
		}
	}
	if !withKey {
		fmt.Fprintf(e.stderr, "note: without --key the config's PrivateKey line is a comment to fill in, and a phone app cannot import it as it is\n")
	}
	if path := c.String("png"); path != "" {
		png, err := q.PNG(-8) // 8 pixels per module
		if err != nil {
			return err
		}
		// 0600: with --key the picture holds the member's private key.
		if err := fileutil.WriteFileExclusive(path, png, 0o600); err != nil {
			return err
		}
		_, err = fmt.Fprintf(e.stdout, "%s: QR code of the wg-quick config of %s (%d bytes of config)\n", path, name, len(conf))
		return err
	}
	_, err = e.stdout.Write([]byte(halfBlocks(q.Bitmap())))
	return err
}

// halfBlocks draws a QR bitmap (true = dark module) with UTF-8 half blocks,
// two rows of modules per line of text. As qrencode -t UTF8 does, the
// characters draw the light modules, for the common terminal with light text
// on a dark background; the bitmap's quiet zone becomes a light frame.
func halfBlocks(bm [][]bool) string {
	light := func(y, x int) bool { return y >= len(bm) || !bm[y][x] }
	var b strings.Builder
	for y := 0; y < len(bm); y += 2 {
		for x := range bm[y] {
			switch top, bottom := light(y, x), light(y+1, x); {
			case top && bottom:
				b.WriteString("█")
			case top:
				b.WriteString("▀")
			case bottom:
				b.WriteString("▄")
			default:
				b.WriteByte(' ')
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}
