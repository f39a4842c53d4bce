package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cacheMountProject is a RUN whose cache mount keeps the first runner's
// marker: a runner that finds it copies it into the image, one that does
// not writes its own name. RUNNER is a build arg the RUN uses, so another
// runner's value reruns the step.
const cacheMountProject = `FROM busybox
ARG RUNNER=A
RUN --mount=type=cache,target=/root/.cache/app sh -c '[ -f /root/.cache/app/marker ] || echo filled-by-$RUNNER > /root/.cache/app/marker; cat /root/.cache/app/marker; cp /root/.cache/app/marker /seen; echo ran-as-$RUNNER'
`

// RUN --mount=type=cache content travels with --cache-to …,cache-mounts=true
// (moby/buildkit#1474): runner B, a fresh root whose step reruns, finds
// runner A's content in the mount; the content is in no image layer and
// in no key.
func TestCacheMountsAcrossRunners(t *testing.T) {
	reg := startRegistry(t)
	for _, kind := range []string{"registry", "local"} {
		t.Run(kind, func(t *testing.T) {
			to := "type=local,dest=" + filepath.Join(t.TempDir(), "cache")
			from := "type=local,src=" + strings.TrimPrefix(to, "type=local,dest=")
			if kind == "registry" {
				ref := reg.host + "/team/app:mounts"
				to, from = "type=registry,ref="+ref, "type=registry,ref="+ref
			}
			a := newEnv(t)
			ctx := project(t, cacheMountProject, nil)
			builtA := a.build(ctx, nil, "--cache-to", to+",mode=max,cache-mounts=true")
			if !strings.Contains(builtA.stderr, "filled-by-A") {
				t.Fatalf("runner A did not fill its cache mount:\n%s", tail(builtA.stderr, 20))
			}

			b := newEnv(t)
			out, oci := filepath.Join(t.TempDir(), "rootfs"), filepath.Join(t.TempDir(), "img.tar")
			builtB := b.build(project(t, cacheMountProject, nil), nil, "--build-arg", "RUNNER=B", "--cache-from", from,
				"-o", "type=local,dest="+out, "-o", "type=oci,dest="+oci)
			run := builtB.find(t, "RUN")
			if builtB.steps[run].Status != "done" || !strings.Contains(builtB.stderr, "ran-as-B") {
				t.Fatalf("runner B did not rerun the step:%s", builtB.describe())
			}
			if got := readFile(t, filepath.Join(out, "seen")); got != "filled-by-A\n" {
				t.Errorf("runner B's cache mount held %q, want runner A's filled-by-A", got)
			}
			for _, n := range layerNames(t, oci) {
				if strings.HasPrefix(n, "root/.cache") {
					t.Errorf("image layer entry %q comes from the cache mount", n)
				}
			}
			if _, err := os.Lstat(filepath.Join(out, "root/.cache/app/marker")); err == nil {
				t.Error("the cache mount's marker is in the image")
			}

			// The mount's content is in no key: a runner without the
			// import keys the step the same.
			c := newEnv(t)
			outC := filepath.Join(t.TempDir(), "rootfs")
			builtC := c.build(project(t, cacheMountProject, nil), nil, "--build-arg", "RUNNER=B", "-o", "type=local,dest="+outC)
			if k, want := builtC.steps[builtC.find(t, "RUN")].Key, builtB.steps[run].Key; k != want {
				t.Errorf("the restored cache mount changed the step's key: %s, without it %s", short(want), short(k))
			}
			if got := readFile(t, filepath.Join(outC, "seen")); got != "filled-by-B\n" {
				t.Errorf("without the import the cache mount held %q, want an empty mount (filled-by-B)", got)
			}
			// A local copy wins over the imported one.
			again := b.build(project(t, cacheMountProject, nil), nil, "--build-arg", "RUNNER=B2", "--cache-from", from)
			if !strings.Contains(again.stderr, "filled-by-A") || !strings.Contains(again.stderr, "ran-as-B2") {
				t.Errorf("runner B's second build:\n%s", tail(again.stderr, 20))
			}
		})
	}
}

// Runner B exports again after reusing every step: its root has no copy
// of the cache mount, so the imported one is carried on, and a third
// runner still finds A's content.
func TestCacheMountsCarriedOnByACachedBuild(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	dir2 := filepath.Join(t.TempDir(), "cache2")
	a := newEnv(t)
	a.build(project(t, cacheMountProject, nil), nil, "--cache-to", "type=local,dest="+dir+",mode=max,cache-mounts=true")
	b := newEnv(t)
	builtB := b.build(project(t, cacheMountProject, nil), nil, "--cache-from", "type=local,src="+dir,
		"--cache-to", "type=local,dest="+dir2+",mode=max,cache-mounts=true")
	if builtB.res.StepsBuilt != 0 {
		t.Fatalf("runner B executed steps:%s", builtB.describe())
	}
	index := readFile(t, filepath.Join(dir2, "index.json"))
	var idx struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	if err := json.Unmarshal([]byte(index), &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("index.json %s: %v", index, err)
	}
	m := readFile(t, filepath.Join(dir2, "blobs", "sha256", strings.TrimPrefix(idx.Manifests[0].Digest, "sha256:")))
	if !strings.Contains(m, `"dev.minibuild.cache-mount.id":"/root/.cache/app"`) {
		t.Errorf("the re-exported cache lost the cache mount:\n%s", m)
	}
	c := newEnv(t)
	out := filepath.Join(t.TempDir(), "rootfs")
	c.build(project(t, cacheMountProject, nil), nil, "--build-arg", "RUNNER=C", "--cache-from", "type=local,src="+dir2, "-o", "type=local,dest="+out)
	if got := readFile(t, filepath.Join(out, "seen")); got != "filled-by-A\n" {
		t.Errorf("runner C's cache mount held %q, want filled-by-A", got)
	}
}

// cache-mounts= is a --cache-to option of registry and local caches.
func TestCacheMountsOptionRefused(t *testing.T) {
	e := newEmptyEnv(t)
	ctx := project(t, "FROM scratch\n", nil)
	for _, args := range [][]string{
		{"--cache-from", "type=local,src=/nonexistent,cache-mounts=true"},
		{"--cache-to", "type=inline,cache-mounts=true"},
	} {
		r := e.run(runOpts{}, append(append([]string{"build"}, args...), ctx)...)
		if r.code == 0 || !strings.Contains(r.stderr, "cache-mounts") {
			t.Errorf("%v:\n%s", args, r)
		}
	}
}
