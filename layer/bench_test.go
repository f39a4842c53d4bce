package layer

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
)

type ctxFile struct {
	name string
	body []byte
}

func loadCtx(b *testing.B) []ctxFile {
	dir := os.Getenv("LAYER_BENCH_CTX")
	if dir == "" {
		b.Skip("LAYER_BENCH_CTX is not set")
	}
	var out []ctxFile
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			body, _ := os.ReadFile(p)
			out = append(out, ctxFile{p, body})
		}
		return nil
	})
	return out
}

func writeCtx(b *testing.B, files []ctxFile, w io.Writer, pool Pool) Descriptor {
	lw := NewWriter(w, Options{Pool: pool})
	for _, f := range files {
		h := &tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(f.body)), ModTime: time.Unix(1, 0)}
		if err := lw.Add(h, bytes.NewReader(f.body)); err != nil {
			b.Fatal(err)
		}
	}
	d, err := lw.Close()
	if err != nil {
		b.Fatal(err)
	}
	return d
}

func BenchmarkWriteCold(b *testing.B) {
	files := loadCtx(b)
	for i := 0; i < b.N; i++ {
		writeCtx(b, files, io.Discard, nil)
	}
}

func BenchmarkWritePooled(b *testing.B) {
	files := loadCtx(b)
	r := &recorder{}
	d := writeCtx(b, files, r, nil)
	b.Logf("compressed %d bytes", d.Size)
	pool := &memPool{blobs: map[digest.Digest][]byte{d.Digest: r.Bytes()}, locs: map[Key]Loc{}}
	for i, k := range r.keys {
		pool.locs[k] = Loc{Blob: d.Digest, Offset: r.locs[i].Offset, Length: r.locs[i].Length}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		writeCtx(b, files, io.Discard, pool)
	}
}

// BenchmarkSingleStream is the writer before members (one gzip stream at
// the same level, hashed the same way): the baseline of BenchmarkWriteCold.
func BenchmarkSingleStream(b *testing.B) {
	files := loadCtx(b)
	for i := 0; i < b.N; i++ {
		blob := sha256.New()
		gz, _ := gzip.NewWriterLevel(io.MultiWriter(io.Discard, blob), compressionLevel)
		diff := sha256.New()
		tw := tar.NewWriter(io.MultiWriter(gz, diff))
		for _, f := range files {
			h := &tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(f.body)), ModTime: time.Unix(1, 0)}
			Normalize(h, Options{})
			tw.WriteHeader(h)
			tw.Write(f.body)
		}
		tw.Close()
		gz.Close()
	}
}
