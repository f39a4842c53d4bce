package layer

import (
	"archive/tar"
	"bytes"
	"io"
	"math/rand"
	"strings"
	"testing"
	"time"
)

// tarHeader is what archive/tar writes for hdr.
func tarHeader(t *testing.T, hdr *tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	h := *hdr
	if err := tw.WriteHeader(&h); err != nil {
		return nil
	}
	return buf.Bytes()
}

func TestUSTARHeaderMatchesArchiveTar(t *testing.T) {
	epoch := time.Unix(1700000000, 0)
	names := []string{"a", "src/d17/f042.txt", "dir/", strings.Repeat("n", 100), strings.Repeat("n", 101),
		strings.Repeat("d/", 50) + "f", "caf\u00e9", "a\x00b", "sp ace/\x7f", ""}
	links := []string{"", "../x", strings.Repeat("l", 100), strings.Repeat("l", 101), "\u00e9"}
	nums := []int64{0, 1, 0o644, 0o7777, 1<<21 - 1, 1 << 21, -1}
	sizes := []int64{0, 1, 511, 512, 10300, 1<<33 - 1, 1 << 33}
	times := []time.Time{{}, time.Unix(0, 0), epoch, time.Unix(1<<33-1, 0), time.Unix(1<<33, 0), time.Unix(-5, 0), epoch.Add(time.Millisecond)}
	types := []byte{tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeChar, tar.TypeFifo}
	rng := rand.New(rand.NewSource(1))
	pick := func(n int) int { return rng.Intn(n) }
	plain, checked := 0, 0
	for i := 0; i < 20000; i++ {
		hdr := &tar.Header{Name: names[pick(len(names))], Linkname: links[pick(len(links))], Typeflag: types[pick(len(types))],
			Mode: nums[pick(len(nums))], Uid: int(nums[pick(len(nums))]), Gid: int(nums[pick(len(nums))]),
			Size: sizes[pick(len(sizes))], ModTime: times[pick(len(times))]}
		switch pick(8) {
		case 0:
			hdr.Uname = "root"
		case 1:
			hdr.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": "x"}
		case 2:
			hdr.Devmajor = 1
		}
		var opts Options
		if pick(4) == 0 {
			opts.Epoch = &epoch
		}
		Normalize(hdr, opts)
		var b [blockSize]byte
		ok := ustarHeader(hdr, &b)
		want := tarHeader(t, hdr)
		checked++
		if !ok {
			continue
		}
		plain++
		if !bytes.Equal(b[:], want) {
			t.Fatalf("%+v:\n got %q\nwant %q", hdr, b[:], want)
		}
	}
	if plain < checked/20 {
		t.Fatalf("only %d of %d headers took the plain path", plain, checked)
	}
}

// TestPlainAndTarPathsWriteOneStream: a layer mixing plain headers and
// ones archive/tar must format is the stream archive/tar alone writes.
func TestPlainAndTarPathsWriteOneStream(t *testing.T) {
	type ent struct {
		hdr  tar.Header
		body string
	}
	ents := []ent{
		{tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}, ""},
		{tar.Header{Name: "d/a", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3}, "abc"},
		{tar.Header{Name: strings.Repeat("long/", 30) + "f", Typeflag: tar.TypeReg, Mode: 0o600, Size: 600}, strings.Repeat("x", 600)},
		{tar.Header{Name: "d/l", Typeflag: tar.TypeSymlink, Linkname: "a"}, ""},
		{tar.Header{Name: "d/\u00e9", Typeflag: tar.TypeReg, Size: 512}, strings.Repeat("y", 512)},
		{tar.Header{Name: "d/h", Typeflag: tar.TypeLink, Linkname: "d/a"}, ""},
		{tar.Header{Name: "d/z", Typeflag: tar.TypeReg, Size: 0}, ""},
	}
	var tee bytes.Buffer
	w := NewWriter(io.Discard, Options{Tee: &tee})
	var want bytes.Buffer
	tw := tar.NewWriter(&want)
	for i, e := range ents {
		h := e.hdr
		var err error
		if i%2 == 1 && h.Typeflag == tar.TypeReg {
			err = w.AddFile(&h, []byte(e.body), [32]byte{})
		} else {
			err = w.Add(&h, strings.NewReader(e.body))
		}
		if err != nil {
			t.Fatal(err)
		}
		r := e.hdr
		Normalize(&r, Options{})
		if err := tw.WriteHeader(&r); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, e.body)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	if !bytes.Equal(tee.Bytes(), want.Bytes()) {
		t.Fatal("the layer's tar stream is not archive/tar's")
	}
}
