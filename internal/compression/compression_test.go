package compression

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

func TestDecompress(t *testing.T) {
	plain := bytes.Repeat([]byte("minibuild layer "), 1000)
	var gz, zs bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(plain)
	gw.Close()
	zw, _ := zstd.NewWriter(&zs)
	zw.Write(plain)
	zw.Close()
	blobs := map[Format][]byte{0: plain, Gzip: gz.Bytes(), Zstd: zs.Bytes()}
	for _, tool := range []struct {
		f    Format
		args []string
	}{{Bzip2, []string{"bzip2", "-c"}}, {Xz, []string{"xz", "-c"}}} {
		cmd := exec.Command(tool.args[0], tool.args[1:]...)
		cmd.Stdin = bytes.NewReader(plain)
		out, err := cmd.Output()
		if err != nil {
			t.Logf("no %s: %v", tool.args[0], err)
			continue
		}
		blobs[tool.f] = out
	}
	for f, blob := range blobs {
		if got := Detect(blob); got != f {
			t.Errorf("Detect = %d, want %d", got, f)
		}
		for _, accept := range []Format{Any, Layer} {
			rc, err := Decompress(context.Background(), bytes.NewReader(blob), accept)
			if err != nil {
				t.Fatalf("format %d, accept %d: %v", f, accept, err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatalf("format %d, accept %d: read: %v", f, accept, err)
			}
			want := plain
			if f&accept == 0 && f != 0 {
				want = blob // not accepted: passed through as it is
			}
			if !bytes.Equal(got, want) {
				t.Errorf("format %d, accept %d: %d bytes, want %d", f, accept, len(got), len(want))
			}
		}
	}
	if _, err := Decompress(context.Background(), bytes.NewReader([]byte{0x1f, 0x8b, 0}), Any); err == nil {
		t.Error("a truncated gzip header decompressed")
	}
}
