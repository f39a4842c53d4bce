package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"
)

func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		in, norm, display string
		wantErr           bool
	}{
		{in: "busybox", norm: "docker.io/library/busybox:latest", display: "busybox:latest"},
		{in: "myapp:1.1", norm: "docker.io/library/myapp:1.1", display: "myapp:1.1"},
		{in: "docker.io/library/myapp:1.1", norm: "docker.io/library/myapp:1.1", display: "myapp:1.1"},
		{in: "index.docker.io/me/app", norm: "docker.io/me/app:latest", display: "me/app:latest"},
		{in: "me/app:v2", norm: "docker.io/me/app:v2", display: "me/app:v2"},
		{in: "localhost:5000/app", norm: "localhost:5000/app:latest", display: "localhost:5000/app:latest"},
		{in: "127.0.0.1:5000/a/b:c", norm: "127.0.0.1:5000/a/b:c", display: "127.0.0.1:5000/a/b:c"},
		{in: "ghcr.io/o/r:1", norm: "ghcr.io/o/r:1", display: "ghcr.io/o/r:1"},
		{in: "Upper:1", wantErr: true},
		{in: "a:b:c", wantErr: true},
		{in: "busybox@sha256:" + strings.Repeat("a", 64), wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := NormalizeTag(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("NormalizeTag(%q) = %q, want error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.norm {
				t.Errorf("NormalizeTag(%q) = %q, want %q", tt.in, got, tt.norm)
			}
			if d := DisplayRef(got); d != tt.display {
				t.Errorf("DisplayRef(%q) = %q, want %q", got, d, tt.display)
			}
		})
	}
	d := "sha256:" + strings.Repeat("b", 64)
	got, err := NormalizeRef("busybox@" + d)
	if err != nil || got != "docker.io/library/busybox@"+d {
		t.Errorf("NormalizeRef(busybox@…) = %q, %v", got, err)
	}
}

func TestBlobWrite(t *testing.T) {
	s := openStore(t)
	data := []byte("hello blob")
	d := digest.FromBytes(data)

	if err := s.PutBlob(bytes.NewReader([]byte("other")), d); err == nil {
		t.Fatal("PutBlob with a mismatching digest succeeded")
	}
	if s.HasBlob(d) {
		t.Fatal("a mismatching write left a blob")
	}
	if _, err := s.OpenBlob(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("OpenBlob of a missing blob: %v, want ErrNotFound", err)
	}
	if err := s.PutBlob(bytes.NewReader(data), d); err != nil {
		t.Fatal(err)
	}
	if err := s.PutBlob(bytes.NewReader(data), d); err != nil {
		t.Fatalf("second PutBlob of a present blob: %v", err)
	}
	rc, err := s.OpenBlob(d)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, data) {
		t.Fatalf("blob content %q", got)
	}
	if p := s.BlobPath(d); p != filepath.Join(s.Root(), "blobs", "sha256", d.Encoded()) {
		t.Errorf("BlobPath = %q", p)
	}

	// Commit("") stores under the computed digest; Abort after Commit is safe.
	bw, err := s.NewBlobWriter()
	if err != nil {
		t.Fatal(err)
	}
	bw.Write([]byte("computed"))
	if err := bw.Commit(""); err != nil {
		t.Fatal(err)
	}
	bw.Abort()
	if !s.HasBlob(digest.FromString("computed")) {
		t.Error("Commit(\"\") did not store the blob")
	}

	// Hostile digests never name a path.
	for _, bad := range []digest.Digest{"sha256:../../etc/passwd", "md5:abcd", ""} {
		if s.HasBlob(bad) || s.BlobPath(bad) != "" {
			t.Errorf("hostile digest %q accepted", bad)
		}
		if err := s.PutBlob(strings.NewReader("x"), bad); err == nil && bad != "" {
			t.Errorf("PutBlob(%q) succeeded", bad)
		}
	}
	assertNoTemps(t, s)
}

func assertNoTemps(t *testing.T, s *Store) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(s.Root(), "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("temp files left behind: %d", len(ents))
	}
}

func TestConcurrentSameBlob(t *testing.T) {
	s := openStore(t)
	data := bytes.Repeat([]byte("0123456789"), 100000)
	d := digest.FromBytes(data)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			// Each goroutine opens its own Store value, as another process would.
			s2, err := Open(s.Root())
			if err != nil {
				errs <- err
				return
			}
			errs <- s2.PutBlob(bytes.NewReader(data), d)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(s.BlobPath(d))
	if err != nil || !bytes.Equal(b, data) {
		t.Fatalf("blob after concurrent writes: %v", err)
	}
	assertNoTemps(t, s)
}

func TestWriteImageRoundTrip(t *testing.T) {
	s := openStore(t)
	img, err := random.Image(2048, 3)
	if err != nil {
		t.Fatal(err)
	}
	md, err := s.WriteImage(img)
	if err != nil {
		t.Fatal(err)
	}
	wantDigest, _ := img.Digest()
	if md != wantDigest {
		t.Fatalf("WriteImage = %s, want %s", md, wantDigest)
	}
	got, err := s.Image(md.String())
	if err != nil {
		t.Fatal(err)
	}
	assertSameImage(t, img, got)
	if _, err := s.Image("nope:1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Image(nope:1) = %v, want ErrNotFound", err)
	}
}

// assertSameImage checks manifest, config and every layer byte for byte.
func assertSameImage(t *testing.T, want, got v1.Image) {
	t.Helper()
	wm, _ := want.RawManifest()
	gm, err := got.RawManifest()
	if err != nil || !bytes.Equal(wm, gm) {
		t.Fatalf("manifest differs: %v", err)
	}
	wc, _ := want.RawConfigFile()
	gc, err := got.RawConfigFile()
	if err != nil || !bytes.Equal(wc, gc) {
		t.Fatalf("config differs: %v", err)
	}
	for _, f := range []func(v1.Image) (v1.Hash, error){v1.Image.Digest, v1.Image.ConfigName} {
		a, _ := f(want)
		b, err := f(got)
		if err != nil || a != b {
			t.Fatalf("hash differs: %s vs %s (%v)", a, b, err)
		}
	}
	wl, _ := want.Layers()
	gl, err := got.Layers()
	if err != nil || len(wl) != len(gl) {
		t.Fatalf("layers: %d vs %d (%v)", len(wl), len(gl), err)
	}
	for i := range wl {
		a := readAll(t, wl[i].Compressed)
		b := readAll(t, gl[i].Compressed)
		if !bytes.Equal(a, b) {
			t.Fatalf("layer %d differs", i)
		}
		wd, _ := wl[i].DiffID()
		gd, err := gl[i].DiffID()
		if err != nil || wd != gd {
			t.Fatalf("layer %d diffID %s vs %s (%v)", i, wd, gd, err)
		}
		if u := readAll(t, gl[i].Uncompressed); len(u) == 0 {
			t.Fatalf("layer %d: empty uncompressed", i)
		}
	}
}

func readAll(t *testing.T, open func() (io.ReadCloser, error)) []byte {
	t.Helper()
	rc, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// unreadableLayer fails if anyone reads its content.
type unreadableLayer struct{ v1.Layer }

func (l unreadableLayer) Compressed() (io.ReadCloser, error) {
	return nil, errors.New("Compressed() called on a layer the store already has")
}
func (l unreadableLayer) Uncompressed() (io.ReadCloser, error) {
	return nil, errors.New("Uncompressed() called on a layer the store already has")
}

func TestWriteImageSkipsPresentLayers(t *testing.T) {
	s := openStore(t)
	base, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteImage(base); err != nil {
		t.Fatal(err)
	}
	baseLayers, _ := base.Layers()
	var adds []mutate.Addendum
	for _, l := range baseLayers {
		adds = append(adds, mutate.Addendum{Layer: unreadableLayer{l}})
	}
	extra, err := random.Layer(512, "application/vnd.oci.image.layer.v1.tar+gzip")
	if err != nil {
		t.Fatal(err)
	}
	adds = append(adds, mutate.Addendum{Layer: extra})
	img, err := mutate.Append(empty.Image, adds...)
	if err != nil {
		t.Fatal(err)
	}
	md, err := s.WriteImage(img)
	if err != nil {
		t.Fatalf("WriteImage read a present layer: %v", err)
	}
	got, err := s.Image(md.String())
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := got.Layers()
	if len(layers) != 3 {
		t.Fatalf("%d layers", len(layers))
	}
	ed, _ := extra.Digest()
	if !s.HasBlob(toDigest(ed)) {
		t.Error("new layer not stored")
	}
}

// imageWithEnv is a cheap image whose id is steered by an env var.
func imageWithEnv(t *testing.T, env string, created time.Time) v1.Image {
	t.Helper()
	img, err := mutate.Config(empty.Image, v1.Config{Env: []string{env}})
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.CreatedAt(img, v1.Time{Time: created})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestResolve(t *testing.T) {
	s := openStore(t)
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	// Find two images whose ids share a 4-hex prefix, for the ambiguity case.
	seen := map[string]v1.Image{}
	var a, b v1.Image
	for i := 0; a == nil; i++ {
		img := imageWithEnv(t, fmt.Sprint("N=", i), t0.Add(time.Duration(i)*time.Second))
		id, _ := img.ConfigName()
		if prev, ok := seen[id.Hex[:4]]; ok {
			a, b = prev, img
		}
		seen[id.Hex[:4]] = img
	}
	other := imageWithEnv(t, "OTHER=1", t0)
	amd, _ := s.WriteImage(a)
	bmd, _ := s.WriteImage(b)
	omd, err := s.WriteImage(other)
	if err != nil {
		t.Fatal(err)
	}
	aid, _ := a.ConfigName()
	bid, _ := b.ConfigName()
	oid, _ := other.ConfigName()
	if err := s.Tag("myapp:1.1", amd); err != nil {
		t.Fatal(err)
	}
	if err := s.Tag("busybox", omd); err != nil {
		t.Fatal(err)
	}
	// A tag that looks like a hex prefix wins over the id prefix, as in docker.
	if err := s.Tag("beef", bmd); err != nil {
		t.Fatal(err)
	}
	// A unique prefix of a or b: extend the shared prefix until it differs.
	n := 4
	for aid.Hex[:n] == bid.Hex[:n] {
		n++
	}

	tests := []struct {
		ref  string
		want v1.Hash
		err  string // substring; "" = success
	}{
		{ref: "myapp:1.1", want: amd},
		{ref: "docker.io/library/myapp:1.1", want: amd},
		{ref: "busybox", want: omd},
		{ref: "busybox:latest", want: omd},
		{ref: "beef", want: bmd},
		{ref: "busybox@" + omd.String(), want: omd},
		{ref: amd.String(), want: amd},
		{ref: aid.String(), want: amd},
		{ref: bid.Hex, want: bmd},
		{ref: oid.Hex[:12], want: omd},
		{ref: aid.Hex[:n], want: amd},
		{ref: bid.Hex[:n], want: bmd},
		{ref: aid.Hex[:4], err: "ambiguous"},
		{ref: oid.Hex[:3], err: "not found"},
		{ref: "myapp:2", err: "not found"},
		{ref: "sha256:" + strings.Repeat("0", 64), err: "not found"},
		{ref: "sha256:abc", err: "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			img, err := s.Image(tt.ref)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Image(%q) error = %v, want %q", tt.ref, err, tt.err)
				}
				if tt.err == "not found" && !errors.Is(err, ErrNotFound) {
					t.Fatalf("error %v is not ErrNotFound", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d, _ := img.Digest(); d != tt.want {
				t.Fatalf("Image(%q) = %s, want %s", tt.ref, d, tt.want)
			}
		})
	}
}

func TestTagsAndImages(t *testing.T) {
	s := openStore(t)
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	old := imageWithEnv(t, "A=1", t0)
	recent := imageWithEnv(t, "A=2", t0.Add(time.Hour))
	omd, _ := s.WriteImage(old)
	rmd, err := s.WriteImage(recent)
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"myapp:1.1", "myapp", "ghcr.io/o/r:1"} {
		if err := s.Tag(tag, rmd); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Tag("myapp:1.0", omd); err != nil {
		t.Fatal(err)
	}
	if err := s.Tag("x", v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("1", 64)}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Tag of a missing manifest: %v", err)
	}
	infos, err := s.Images()
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 || infos[0].Digest != rmd || infos[1].Digest != omd {
		t.Fatalf("Images() = %+v", infos)
	}
	if got := strings.Join(infos[0].Tags, ","); got != "ghcr.io/o/r:1,myapp:1.1,myapp:latest" {
		t.Errorf("tags = %s", got)
	}
	rid, _ := recent.ConfigName()
	if infos[0].ID != rid || !infos[0].Created.Equal(t0.Add(time.Hour)) {
		t.Errorf("info = %+v", infos[0])
	}
	// Retagging moves the tag; untagging leaves a dangling image.
	if err := s.Tag("myapp:1.0", rmd); err != nil {
		t.Fatal(err)
	}
	if err := s.Untag("myapp:1.1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Untag("myapp:1.1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Untag: %v", err)
	}
	infos, _ = s.Images()
	if len(infos[1].Tags) != 0 || strings.Join(infos[0].Tags, ",") != "ghcr.io/o/r:1,myapp:1.0,myapp:latest" {
		t.Errorf("after retag: %+v", infos)
	}
}

func TestImageSize(t *testing.T) {
	s := openStore(t)
	img, _ := random.Image(1000, 2)
	md, err := s.WriteImage(img)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := img.Manifest()
	want := m.Layers[0].Size + m.Layers[1].Size
	infos, _ := s.Images()
	if len(infos) != 1 || infos[0].Size != want || infos[0].Digest != md {
		t.Fatalf("Images() = %+v, want size %d", infos, want)
	}
}

func TestConcurrentTags(t *testing.T) {
	s := openStore(t)
	img := imageWithEnv(t, "X=1", time.Unix(0, 0))
	md, err := s.WriteImage(img)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			s2, _ := Open(s.Root())
			if err := s2.Tag(fmt.Sprintf("app:%d", i), md); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	infos, _ := s.Images()
	if len(infos) != 1 || len(infos[0].Tags) != 20 {
		t.Fatalf("lost updates: %+v", infos)
	}
}

func TestGC(t *testing.T) {
	s := openStore(t)
	keepImg, _ := random.Image(100, 1)
	dropImg, _ := random.Image(100, 1)
	kmd, _ := s.WriteImage(keepImg)
	dmd, err := s.WriteImage(dropImg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Tag("keep", kmd); err != nil {
		t.Fatal(err)
	}
	cached := digest.FromString("cache layer")
	s.PutBlob(strings.NewReader("cache layer"), cached)

	// Within the grace period nothing is removed.
	if removed, err := s.GC(nil, time.Hour); err != nil || len(removed) != 0 {
		t.Fatalf("GC with grace removed %v (%v)", removed, err)
	}
	removed, err := s.GC([]digest.Digest{cached}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 3 { // manifest, config, layer of dropImg
		t.Errorf("removed %v", removed)
	}
	if s.HasBlob(toDigest(dmd)) || !s.HasBlob(toDigest(kmd)) || !s.HasBlob(cached) {
		t.Error("GC removed the wrong blobs")
	}
	got, err := s.Image("keep")
	if err != nil {
		t.Fatal(err)
	}
	assertSameImage(t, keepImg, got)
	if _, err := s.Image(dmd.String()); !errors.Is(err, ErrNotFound) {
		t.Errorf("collected image still resolves: %v", err)
	}
}

func TestBlobSources(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("layer")
	if got := s.BlobSources(d); len(got) != 0 {
		t.Fatalf("fresh store knows sources %v", got)
	}
	for _, repo := range []string{"reg:5000/a", "reg:5000/b", "reg:5000/a"} {
		if err := s.AddBlobSource(d, repo); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.BlobSources(d); !slices.Equal(got, []string{"reg:5000/b", "reg:5000/a"}) {
		t.Errorf("sources %v, want newest first without duplicates", got)
	}
	for _, bad := range []string{"", "https://user:pw@reg/a", "reg/a\nx", "reg/a@sha256:00"} {
		if err := s.AddBlobSource(d, bad); err == nil {
			t.Errorf("AddBlobSource(%q) accepted", bad)
		}
	}
	if err := s.AddBlobSource("sha256:../../etc", "reg/a"); err == nil {
		t.Error("hostile digest accepted")
	}
}

// The store never names a missing blob, even when a prune (GC) runs in
// another process while a build is writing and tagging its image: blobs
// an image reuses get their grace period refreshed, and a record is only
// written while its blobs are all there.
func TestGCDuringImageWrite(t *testing.T) {
	old := time.Now().Add(-48 * time.Hour)
	age := func(t *testing.T, s *Store, d digest.Digest) {
		t.Helper()
		if err := os.Chtimes(s.BlobPath(d), old, old); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		// run stores img (whose layers are already present and old) and
		// returns its manifest digest; a prune runs between run and Tag.
		run func(t *testing.T, s *Store, img v1.Image) v1.Hash
	}{
		{"WriteImage reuses an old layer", func(t *testing.T, s *Store, img v1.Image) v1.Hash {
			md, err := s.WriteImage(img)
			if err != nil {
				t.Fatal(err)
			}
			return md
		}},
		{"PutBlob of present blobs", func(t *testing.T, s *Store, img v1.Image) v1.Hash {
			raw, _ := img.RawManifest()
			cfg, _ := img.RawConfigFile()
			cd, _ := img.ConfigName()
			md, _ := img.Digest()
			type blob struct {
				data []byte
				d    digest.Digest
			}
			blobs := []blob{{cfg, toDigest(cd)}, {raw, toDigest(md)}}
			layers, _ := img.Layers()
			for _, l := range layers {
				d, _ := l.Digest()
				rc, _ := l.Compressed()
				b, _ := io.ReadAll(rc)
				rc.Close()
				blobs = append(blobs, blob{b, toDigest(d)})
			}
			for _, b := range blobs {
				if err := s.PutBlob(bytes.NewReader(b.data), b.d); err != nil {
					t.Fatal(err)
				}
				age(t, s, b.d) // present and old before this put
				if err := s.PutBlob(bytes.NewReader(b.data), b.d); err != nil {
					t.Fatal(err)
				}
			}
			return md
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			img, err := random.Image(256, 2)
			if err != nil {
				t.Fatal(err)
			}
			layers, _ := img.Layers()
			for _, l := range layers {
				d, _ := l.Digest()
				rc, _ := l.Compressed()
				if err := s.PutBlob(rc, toDigest(d)); err != nil {
					t.Fatal(err)
				}
				rc.Close()
				age(t, s, toDigest(d))
			}
			md := tt.run(t, s, img)
			if _, err := s.GC(nil, time.Hour); err != nil {
				t.Fatal(err)
			}
			// The blobs were in use within the grace period: all kept.
			if err := s.Tag("app:1", md); err != nil {
				t.Fatal(err)
			}
			got, err := s.Image("app:1")
			if err != nil {
				t.Fatal(err)
			}
			m, _ := got.Manifest()
			for _, l := range m.Layers {
				if !s.HasBlob(toDigest(l.Digest)) {
					t.Errorf("tagged image names missing layer %s", l.Digest)
				}
			}
		})
	}
}

// Tag records a manifest stored with PutBlob only when its config and
// layers are all in the store.
func TestTagRefusesIncompleteImage(t *testing.T) {
	s := openStore(t)
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := img.RawManifest()
	cfg, _ := img.RawConfigFile()
	cd, _ := img.ConfigName()
	md, _ := img.Digest()
	if err := s.PutBlob(bytes.NewReader(cfg), toDigest(cd)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutBlob(bytes.NewReader(raw), toDigest(md)); err != nil {
		t.Fatal(err)
	}
	if err := s.Tag("half:1", md); err == nil {
		t.Error("Tag recorded an image whose layer is missing")
	}
	if imgs, _ := s.Images(); len(imgs) != 0 {
		t.Errorf("images.json names %d incomplete images", len(imgs))
	}
}
