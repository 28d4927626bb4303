package ui

import (
	"fmt"

	"github.com/skip2/go-qrcode"
)

// qrPNG draws conf as a QR code the WireGuard phone apps import, 8 pixels
// a module, with medium error correction, or low when the config is too
// long for medium (as `wgmesh book export --qr` does).
func qrPNG(conf []byte) ([]byte, error) {
	q, err := qrcode.New(string(conf), qrcode.Medium)
	if err != nil {
		if q, err = qrcode.New(string(conf), qrcode.Low); err != nil {
			return nil, fmt.Errorf("the config is %d bytes, too long for a QR code: %w", len(conf), err)
		}
	}
	return q.PNG(-8)
}
