// Package compression recognizes a compressed stream by its magic number
// (never by a file name) and decompresses it: the one sniffer behind ADD's
// local archives (copier) and layer blobs (snapshot). Writing compressed
// layers is package layer's job, at its one fixed setting.
package compression

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"context"
	"fmt"
	"io"
	"os/exec"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Format is a set of compression formats.
type Format uint8

// The formats Decompress knows.
const (
	Gzip Format = 1 << iota
	Bzip2
	Xz // through the xz program, as docker's archive package does
	Zstd

	// Layer is what an OCI layer blob may be (besides plain tar).
	Layer = Gzip | Zstd
	// Any is every format: ADD extracts all of them.
	Any = Gzip | Bzip2 | Xz | Zstd
)

var magics = []struct {
	f     Format
	magic []byte
}{
	{Gzip, []byte{0x1f, 0x8b}},
	{Bzip2, []byte("BZh")},
	{Xz, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}},
	{Zstd, []byte{0x28, 0xb5, 0x2f, 0xfd}},
}

// Detect names the format whose magic number head starts with; 0 = none
// (plain data).
func Detect(head []byte) Format {
	for _, m := range magics {
		if bytes.HasPrefix(head, m.magic) {
			return m.f
		}
	}
	return 0
}

// Decompress returns r's content decompressed when it starts with the
// magic number of a format in accept; anything else (plain data, or a
// format not accepted) comes back as it is. ctx bounds the xz program.
// Closing the result does not close r.
func Decompress(ctx context.Context, r io.Reader, accept Format) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(8)
	switch Detect(head) & accept {
	case Gzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, nil
	case Bzip2:
		return io.NopCloser(bzip2.NewReader(br)), nil
	case Zstd:
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return zr.IOReadCloser(), nil
	case Xz:
		return xzReader(ctx, br)
	}
	return io.NopCloser(br), nil
}

type cmdReader struct {
	io.ReadCloser
	cmd *exec.Cmd
}

func (c *cmdReader) Close() error {
	c.ReadCloser.Close()
	c.cmd.Process.Kill()
	c.cmd.Wait()
	return nil
}

func xzReader(ctx context.Context, r io.Reader) (io.ReadCloser, error) {
	cmd := exec.CommandContext(ctx, "xz", "-d", "-c", "-q")
	cmd.Stdin = r
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("xz archive needs the xz program: %w", err)
	}
	return &cmdReader{ReadCloser: out, cmd: cmd}, nil
}
