package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The OCI tar is accepted by skopeo and unpacked by umoci; the docker tar (from
// -o type=docker and from save) by skopeo; all describe the built image.
func TestArchivesAcceptedBySkopeoAndUmoci(t *testing.T) {
	e := newEnv(t)
	app := e.copyExample("python-app")
	dir := t.TempDir()
	ociTar := filepath.Join(dir, "myapp.oci.tar")
	dockerTar := filepath.Join(dir, "myapp.docker.tar")

	b := e.build(app, nil, "-t", "myapp:1.0", "-o", "type=oci,dest="+ociTar)
	inspected := decodeJSON(t, "skopeo inspect oci-archive", tool(t, "skopeo", "inspect", "oci-archive:"+ociTar))
	if d, _ := findKey(inspected, "Digest"); d != b.res.Digest {
		t.Errorf("skopeo sees manifest digest %v in the OCI tar; the build reported %s", d, b.res.Digest)
	}
	layers, _ := findKey(inspected, "Layers")
	nLayers := len(strs(layers))
	if nLayers < 4 {
		t.Errorf("skopeo sees %d layers; want the base, WORKDIR/COPY, the install RUN and COPY app.py", nLayers)
	}
	raw := decodeJSON(t, "skopeo inspect --raw --config", tool(t, "skopeo", "inspect", "--raw", "--config", "oci-archive:"+ociTar))
	cfg := imageConfig(t, raw)
	if got := strs(field(cfg, "Cmd")); strings.Join(got, " ") != "python app.py" {
		t.Errorf("config Cmd = %q, want [python app.py]", got)
	}
	if got := field(cfg, "WorkingDir"); got != "/app" {
		t.Errorf("config WorkingDir = %v, want /app", got)
	}

	// umoci reads an OCI layout directory and a tag from index.json.
	layout := filepath.Join(dir, "layout")
	if err := os.MkdirAll(layout, 0o755); err != nil {
		t.Fatal(err)
	}
	tool(t, "tar", "-xf", ociTar, "-C", layout)
	index := decodeJSON(t, "index.json", readFile(t, filepath.Join(layout, "index.json")))
	ref, _ := findKey(index, "org.opencontainers.image.ref.name")
	tag, _ := ref.(string)
	if tag == "" {
		t.Fatalf("index.json names no org.opencontainers.image.ref.name, so `umoci unpack --image DIR:TAG` cannot find the image:\n%s",
			readFile(t, filepath.Join(layout, "index.json")))
	}
	bundle := filepath.Join(dir, "bundle")
	tool(t, "umoci", "unpack", "--image", layout+":"+tag, bundle)
	if got, want := readFile(t, filepath.Join(bundle, "rootfs/app/app.py")), readFile(t, filepath.Join(app, "app.py")); got != want {
		t.Errorf("umoci unpacked /app/app.py = %q, want %q", got, want)
	}
	for _, p := range []string{"rootfs/bin/busybox", "rootfs/app/site-packages/flask/__init__.py", "config.json"} {
		if _, err := os.Stat(filepath.Join(bundle, p)); err != nil {
			t.Errorf("umoci bundle lacks %s: %v", p, err)
		}
	}

	b2 := e.build(app, nil, "-t", "myapp:1.0", "-o", "type=docker,dest="+dockerTar)
	if b2.res.ImageID != b.res.ImageID {
		t.Errorf("the docker export built %s, the OCI export %s", b2.res.ImageID, b.res.ImageID)
	}
	d := decodeJSON(t, "skopeo inspect docker-archive", tool(t, "skopeo", "inspect", "docker-archive:"+dockerTar))
	if l, _ := findKey(d, "Layers"); len(strs(l)) != nLayers {
		t.Errorf("docker tar has %d layers, OCI tar %d", len(strs(l)), nLayers)
	}

	saved := filepath.Join(dir, "saved.tar")
	e.ok("save", "-o", saved, "myapp:1.0")
	d = decodeJSON(t, "skopeo inspect docker-archive (save)", tool(t, "skopeo", "inspect", "docker-archive:"+saved))
	if l, _ := findKey(d, "Layers"); len(strs(l)) != nLayers {
		t.Errorf("saved tar has %d layers, OCI tar %d", len(strs(l)), nLayers)
	}
}

// save → load into an empty store (docker-archive), and load of OCI layouts
// as tar and as directory: the same image ids, and buildable upon.
func TestSaveLoadRoundTrip(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, "FROM busybox\nRUN echo hi > /hi.txt\nCMD [\"cat\", \"/hi.txt\"]\n", nil)
	dir := t.TempDir()
	ociTar := filepath.Join(dir, "keep.oci.tar")
	b := e.build(ctx, nil, "-t", "keep:1")
	e.build(ctx, nil, "-t", "keep:1", "-o", "type=oci,dest="+ociTar)
	saved := filepath.Join(dir, "keep.tar")
	e.ok("save", "-o", saved, "keep:1", "busybox:latest")

	ociDir := filepath.Join(dir, "layout")
	if err := os.MkdirAll(ociDir, 0o755); err != nil {
		t.Fatal(err)
	}
	tool(t, "tar", "-xf", ociTar, "-C", ociDir)

	for _, tc := range []struct{ name, input, ref string }{
		{"docker-archive", saved, "keep:1"},
		{"oci tar", ociTar, ""},
		{"oci dir", ociDir, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newEmptyEnv(t)
			r := f.ok("load", "-i", tc.input)
			ref := tc.ref
			if ref == "" {
				ref = b.res.ImageID // an OCI layout may carry only a short tag
			}
			ins := f.ok("inspect", ref)
			if !strings.Contains(ins.stdout, b.res.ImageID) {
				t.Errorf("inspect %s after load does not show the image id %s:\n%s\nload said:\n%s", ref, b.res.ImageID, ins.stdout, r)
			}
			if tc.ref == "" {
				return
			}
			imgs := f.ok("images")
			for _, want := range []string{"keep", "busybox"} {
				if !strings.Contains(imgs.stdout, want) {
					t.Errorf("images after load lacks %s:\n%s", want, imgs.stdout)
				}
			}
			child := project(t, "FROM keep:1\nRUN cp /hi.txt /copy.txt\n", nil)
			out := filepath.Join(t.TempDir(), "rootfs")
			f.build(child, nil, "-t", "child:1", "-o", "type=local,dest="+out)
			if got := readFile(t, filepath.Join(out, "copy.txt")); got != "hi\n" {
				t.Errorf("a build on the loaded image gave /copy.txt = %q", got)
			}
		})
	}
}

// -q and --progress=quiet print only the image id; --iidfile writes it; the
// bare form (no "build") and the global --root before the subcommand work;
// -f - reads the Dockerfile from stdin.
func TestQuietIidfileAndInvocationForms(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, "FROM busybox\nRUN echo quiet > /q.txt\n", nil)
	iid := filepath.Join(t.TempDir(), "iid")
	b := e.build(ctx, nil, "-t", "q:1", "--iidfile", iid)
	if got := strings.TrimSpace(readFile(t, iid)); got != b.res.ImageID {
		t.Errorf("--iidfile holds %q, want %s", got, b.res.ImageID)
	}

	for _, args := range [][]string{
		{"build", "-q", "-t", "q:1", ctx},
		{"build", "--progress=quiet", "-t", "q:1", ctx},
	} {
		r := e.ok(args...)
		if r.stdout != b.res.ImageID+"\n" {
			t.Errorf("%v: stdout %q, want only the image id %s", args, r.stdout, b.res.ImageID)
		}
		if strings.TrimSpace(r.stderr) != "" {
			t.Errorf("%v: quiet build wrote to stderr:\n%s", args, r.stderr)
		}
	}

	// Bare form, store from MINIBUILD_ROOT, run inside the context directory.
	r := e.run(runOpts{noRoot: true, dir: ctx, env: []string{"MINIBUILD_ROOT=" + e.root}}, "-q", "-t", "q:2", ".")
	if r.code != 0 || r.stdout != b.res.ImageID+"\n" {
		t.Errorf("bare `minibuild -q -t q:2 .` with MINIBUILD_ROOT: want the cached id %s\n%s", b.res.ImageID, r)
	}
	// Global --root before the subcommand.
	r = e.run(runOpts{noRoot: true}, "--root", e.root, "build", "-q", "-t", "q:3", ctx)
	if r.code != 0 || r.stdout != b.res.ImageID+"\n" {
		t.Errorf("`minibuild --root R build -q …`: want the cached id %s\n%s", b.res.ImageID, r)
	}
	// -f - : the Dockerfile from stdin, the context from the argument.
	r = e.run(runOpts{stdin: "FROM busybox\nRUN echo quiet > /q.txt\n"}, "build", "-q", "-f", "-", "-t", "q:4", ctx)
	if r.code != 0 || r.stdout != b.res.ImageID+"\n" {
		t.Errorf("`-f -` with the same Dockerfile on stdin: want the cached id %s\n%s", b.res.ImageID, r)
	}
	// -f PATH outside the context.
	df := filepath.Join(t.TempDir(), "Other.dockerfile")
	if err := os.WriteFile(df, []byte("FROM busybox\nRUN echo quiet > /q.txt\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = e.ok("build", "-q", "-f", df, "-t", "q:5", ctx)
	if r.stdout != b.res.ImageID+"\n" {
		t.Errorf("-f %s: stdout %q, want %s", df, r.stdout, b.res.ImageID)
	}
	// Only linux/amd64 is supported; anything else is refused clearly.
	r = e.run(runOpts{}, "build", "-q", "--platform", "linux/arm64", "-t", "q:6", ctx)
	if r.code == 0 || !strings.Contains(r.stderr, "linux/arm64") {
		t.Errorf("--platform linux/arm64 should be refused naming the platform:\n%s", r)
	}
	ins := e.ok("inspect", "q:5")
	if !strings.Contains(ins.stdout, b.res.ImageID) {
		t.Errorf("inspect q:5 does not show %s:\n%s", b.res.ImageID, ins.stdout)
	}
}

// images, tag, rmi and history over a built image.
func TestImageCommands(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, "FROM busybox\nLABEL purpose=tagging\nRUN echo one > /one.txt\n", nil)
	b := e.build(ctx, nil, "-t", "tagme:1")

	e.ok("tag", "tagme:1", "tagme:alias")
	imgs := e.ok("images").stdout
	for _, want := range []string{"tagme", "1", "alias", "busybox"} {
		if !strings.Contains(imgs, want) {
			t.Errorf("images lacks %q:\n%s", want, imgs)
		}
	}
	if ins := e.ok("inspect", "tagme:alias"); !strings.Contains(ins.stdout, b.res.ImageID) {
		t.Errorf("inspect tagme:alias does not show %s:\n%s", b.res.ImageID, ins.stdout)
	}
	hist := e.ok("history", "tagme:1").stdout
	for _, want := range []string{"LABEL purpose=tagging", "echo one"} {
		if !strings.Contains(hist, want) {
			t.Errorf("history lacks %q:\n%s", want, hist)
		}
	}

	e.ok("rmi", "tagme:alias")
	if imgs := e.ok("images").stdout; strings.Contains(imgs, "alias") {
		t.Errorf("tagme:alias still listed after rmi:\n%s", imgs)
	}
	if r := e.run(runOpts{}, "inspect", "tagme:alias"); r.code == 0 {
		t.Errorf("inspect of a removed tag succeeded:\n%s", r)
	}
	if ins := e.ok("inspect", "tagme:1"); !strings.Contains(ins.stdout, b.res.ImageID) {
		t.Errorf("rmi of an alias broke the other tag:\n%s", ins.stdout)
	}
	if r := e.run(runOpts{}, "rmi", "nope:1"); r.code == 0 {
		t.Errorf("rmi of an unknown image succeeded:\n%s", r)
	}
	if r := e.run(runOpts{}, "inspect", "nope:1"); r.code == 0 || r.stderr == "" {
		t.Errorf("inspect of an unknown image should fail with a message:\n%s", r)
	}
}

// -o type=oci|docker,dest=F creates F as any new file is created (0666
// less the umask), as buildx does, not with a temp file's 0600.
func TestOutputFileMode(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, "FROM busybox\nLABEL a=b\n", nil)
	dir := t.TempDir()
	ref := filepath.Join(dir, "ref")
	f, err := os.Create(ref)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	want, err := os.Stat(ref)
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{"oci", "docker"} {
		dest := filepath.Join(dir, typ+".tar")
		e.build(ctx, nil, "-o", "type="+typ+",dest="+dest)
		fi, err := os.Stat(dest)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want.Mode().Perm() {
			t.Errorf("%s output mode %v, want %v (as os.Create)", typ, fi.Mode().Perm(), want.Mode().Perm())
		}
	}
}
