package e2e

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// incrementalContext writes the issue-11 shape at a test's scale: 20
// directories of 50 text files of about 8 KB each, COPY . /src and a RUN.
func incrementalContext(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	r := rand.New(rand.NewSource(11))
	words := strings.Fields("alpha beta gamma delta return func if else for range import package var const type struct")
	for d := 0; d < 20; d++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", d))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := 0; f < 50; f++ {
			var b strings.Builder
			for b.Len() < 8192 {
				fmt.Fprintf(&b, "%s %s %08x %d\n", words[r.Intn(len(words))], words[r.Intn(len(words))], r.Uint32(), r.Intn(100000))
			}
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%03d.txt", f)), []byte(b.String()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	df := "FROM busybox\nCOPY . /src\nRUN wc -c /src/d00/f000.txt > /count\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// An image built incrementally (its COPY layer mostly pooled members,
// stored as its parts) has the digest of the same build from scratch on
// another root; the store grows by the edits, not by whole layers; and the
// parts-backed image leaves the store whole: pushed and exported, it
// passes skopeo and umoci.
func TestIncrementalLayersAreDeterministicAndStoredOnce(t *testing.T) {
	e := newEnv(t)
	ctx := incrementalContext(t)
	epoch := []string{"SOURCE_DATE_EPOCH=1700000000"}
	e.build(ctx, epoch, "-t", "inc:cold")
	cold := dirSize(t, blobsDir(t, e.root))
	coldDF, _ := e.df().kind("layer blobs")

	edited := filepath.Join(ctx, "d07/f013.txt")
	var last built
	for i := 1; i <= 3; i++ {
		appendLine(t, edited, fmt.Sprintf("# edit %d", i))
		last = e.build(ctx, epoch, "-t", "inc:edit")
		if last.res.StepsBuilt != 2 {
			t.Fatalf("edit %d rebuilt %d steps, want COPY and RUN", i, last.res.StepsBuilt)
		}
	}
	parts, _ := os.ReadDir(filepath.Join(e.root, "parts", "sha256"))
	if len(parts) < 3 {
		t.Errorf("%d layers stored as parts after 3 one-file edits, want the 3 COPY layers", len(parts))
	}
	if now := dirSize(t, blobsDir(t, e.root)); float64(now) > 1.25*float64(cold) {
		t.Errorf("blobs grew from %d to %d bytes over 3 one-file edits: the edited layers are stored whole", cold, now)
	}
	// df counts what is stored: each byte once, the parts lists and
	// member indexes included, not each layer's full size.
	if now, _ := e.df().kind("layer blobs"); now < coldDF || float64(now) > 1.25*float64(coldDF) {
		t.Errorf("df: layer blobs %d bytes after the cold build, %d after 3 one-file edits", coldDF, now)
	}

	fresh := newEnv(t)
	scratch := fresh.build(ctx, epoch, "-t", "inc:edit", "--no-cache")
	if scratch.res.Digest != last.res.Digest || scratch.res.ImageID != last.res.ImageID {
		t.Fatalf("incremental build %s (id %s), from scratch on another root %s (id %s)",
			last.res.Digest, last.res.ImageID, scratch.res.Digest, scratch.res.ImageID)
	}

	want := readFile(t, edited)
	reg := startRegistry(t)
	ref := reg.host + "/inc/app:1"
	e.ok("tag", "inc:edit", ref)
	e.ok("push", ref)
	tool(t, "skopeo", "inspect", "--tls-verify=false", "docker://"+ref)
	dir := t.TempDir()
	layout := filepath.Join(dir, "pulled")
	tool(t, "skopeo", "copy", "--src-tls-verify=false", "docker://"+ref, "oci:"+layout+":img")
	checkUnpacked(t, layout+":img", filepath.Join(dir, "b1"), want)

	ociTar := filepath.Join(dir, "img.tar")
	b := e.build(ctx, epoch, "-t", "inc:edit", "-o", "type=oci,dest="+ociTar)
	if b.res.StepsBuilt != 0 || b.res.Digest != last.res.Digest {
		t.Fatalf("the export rebuilt %d steps, digest %s (want all cached, %s)", b.res.StepsBuilt, b.res.Digest, last.res.Digest)
	}
	tool(t, "skopeo", "inspect", "oci-archive:"+ociTar)
	exported := filepath.Join(dir, "exported")
	os.MkdirAll(exported, 0o755)
	tool(t, "tar", "-xf", ociTar, "-C", exported)
	tool(t, "skopeo", "copy", "oci-archive:"+ociTar, "oci:"+filepath.Join(dir, "copied")+":img")
	checkUnpacked(t, filepath.Join(dir, "copied")+":img", filepath.Join(dir, "b2"), want)
}

// checkUnpacked unpacks image with umoci and checks the edited file.
func checkUnpacked(t *testing.T, image, bundle, want string) {
	t.Helper()
	tool(t, "umoci", "unpack", "--image", image, bundle)
	if got := readFile(t, filepath.Join(bundle, "rootfs/src/d07/f013.txt")); got != want {
		t.Errorf("umoci unpacked the edited file as %d bytes, want %d", len(got), len(want))
	}
	if got := readFile(t, filepath.Join(bundle, "rootfs/count")); !strings.HasPrefix(got, "8") {
		t.Errorf("/count = %q", got)
	}
}
