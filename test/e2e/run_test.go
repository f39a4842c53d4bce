package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// RUN sees WORKDIR, ENV and the ARGs in scope (with --build-arg, K=V and K
// from the environment), runs as USER resolved by name through the image's
// /etc/passwd, in its own pid namespace, and writes nothing of the host's
// /etc/hosts or /etc/resolv.conf into its layer; ARGs never reach the config.
func TestRunSemantics(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, `FROM busybox
ARG GREETING=hello
ARG UNSEEN
ENV APP_HOME=/srv/app
WORKDIR $APP_HOME
WORKDIR sub
RUN echo "greeting=$GREETING home=$APP_HOME pwd=$(pwd) id=$(id -u):$(id -g)" > /root-run.txt && echo $$ > /pid.txt
USER app
RUN echo "user=$(id -un) id=$(id -u):$(id -g) pwd=$(pwd) greeting=$GREETING unseen=${UNSEEN:-none}" > /tmp/app-run.txt && touch /tmp/app-owned
USER root
RUN echo ok > /etc/ok && rm -f /etc/group- && ls /proc/self >/dev/null
`, nil)

	out := filepath.Join(t.TempDir(), "rootfs")
	b := e.build(ctx, nil, "-t", "runsem:1", "--build-arg", "GREETING=hi", "--build-arg", "NOTDECLARED=1", "-o", "type=local,dest="+out)
	b.checkConsistent(t)
	if !strings.Contains(b.stderr, "NOTDECLARED") {
		t.Errorf("an unused --build-arg is not warned about:\n%s", b.stderr)
	}
	if got, want := strings.TrimSpace(readFile(t, filepath.Join(out, "root-run.txt"))), "greeting=hi home=/srv/app pwd=/srv/app/sub id=0:0"; got != want {
		t.Errorf("RUN as root saw %q, want %q", got, want)
	}
	if got, want := strings.TrimSpace(readFile(t, filepath.Join(out, "tmp/app-run.txt"))), "user=app id=1000:1000 pwd=/srv/app/sub greeting=hi unseen=none"; got != want {
		t.Errorf("RUN as USER app saw %q, want %q", got, want)
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(readFile(t, filepath.Join(out, "pid.txt")))); err != nil || pid > 10 {
		t.Errorf("the RUN shell has pid %d (%v); in its own pid namespace it is among the first processes", pid, err)
	}
	if info, err := os.Stat(filepath.Join(out, "tmp/app-owned")); err != nil {
		t.Errorf("file created by USER app: %v", err)
	} else if st := info.Sys().(*syscall.Stat_t); st.Uid != 1000 || st.Gid != 1000 {
		t.Errorf("file created by USER app is owned by %d:%d, want 1000:1000", st.Uid, st.Gid)
	}
	if info, err := os.Stat(filepath.Join(out, "srv/app/sub")); err != nil || !info.IsDir() {
		t.Errorf("WORKDIR $APP_HOME + WORKDIR sub did not create /srv/app/sub: %v", err)
	}
	for _, p := range []string{"etc/hosts", "etc/resolv.conf", "etc/hostname"} {
		if _, err := os.Lstat(filepath.Join(out, p)); err == nil {
			t.Errorf("/%s leaked from the sandbox into the image", p)
		}
	}
	if entries, err := os.ReadDir(filepath.Join(out, "proc")); err == nil && len(entries) > 0 {
		t.Errorf("/proc in the image is not empty: %d entries", len(entries))
	}

	cfg := imageConfig(t, decodeJSON(t, "inspect", e.ok("inspect", "runsem:1").stdout))
	env := strings.Join(strs(field(cfg, "Env")), "\n")
	if !strings.Contains(env, "APP_HOME=/srv/app") {
		t.Errorf("config Env lacks APP_HOME=/srv/app:\n%s", env)
	}
	if strings.Contains(env, "GREETING") || strings.Contains(env, "UNSEEN") {
		t.Errorf("an ARG persisted into the config Env:\n%s", env)
	}
	if got := field(cfg, "WorkingDir"); got != "/srv/app/sub" {
		t.Errorf("config WorkingDir = %v, want /srv/app/sub", got)
	}
	if got := field(cfg, "User"); got != "root" {
		t.Errorf("config User = %v, want root", got)
	}

	// A build arg given by name only is taken from the environment; another
	// value changes the keys from the first step that can see it.
	out2 := filepath.Join(t.TempDir(), "rootfs")
	b2 := e.build(ctx, []string{"GREETING=from-env", "UNSEEN=seen"}, "-t", "runsem:2",
		"--build-arg", "GREETING", "--build-arg", "UNSEEN", "-o", "type=local,dest="+out2)
	if got := readFile(t, filepath.Join(out2, "tmp/app-run.txt")); !strings.Contains(got, "greeting=from-env unseen=seen") {
		t.Errorf("--build-arg NAME did not take the value from the environment: %q", got)
	}
	if b2.steps[0].Key != b.steps[0].Key {
		t.Errorf("the FROM key changed with a build arg FROM cannot see")
	}
	i := b2.find(t, "RUN")
	if b2.steps[i].Status != "done" || b2.steps[i].Key == b.steps[i].Key {
		t.Errorf("the first RUN kept key %s / status %s although GREETING changed", short(b2.steps[i].Key), b2.steps[i].Status)
	}
}

// Stages, --target, and COPY --from keyed on content: a rebuilt stage that
// produces identical files does not bust the steps that copy from it.
func TestMultiStageAndTarget(t *testing.T) {
	e := newEnv(t)
	dockerfile := func(builderCmd string) string {
		return `ARG VARIANT=plain
FROM busybox AS builder
RUN ` + builderCmd + `
FROM busybox AS unused
RUN echo never > /never
FROM busybox
ARG VARIANT
COPY --from=builder /artifact /artifact
RUN echo "$VARIANT" > /variant
CMD ["cat", "/artifact"]
`
	}
	ctx := project(t, dockerfile("echo built > /artifact"), nil)
	out := filepath.Join(t.TempDir(), "final")
	b1 := e.build(ctx, nil, "-t", "multi:1", "-o", "type=local,dest="+out)
	if got := readFile(t, filepath.Join(out, "artifact")); got != "built\n" {
		t.Errorf("/artifact = %q", got)
	}
	if got := readFile(t, filepath.Join(out, "variant")); got != "plain\n" {
		t.Errorf("a global ARG redeclared in the stage gave /variant = %q, want plain", got)
	}
	if _, err := os.Stat(filepath.Join(out, "never")); err == nil {
		t.Errorf("a file of another stage is in the final image")
	}
	for _, s := range b1.events {
		if strings.Contains(s.Instruction, "echo never") && s.Status != "cached" {
			t.Errorf("the unused stage was built (%s); the final image does not need it", s.Status)
		}
	}

	tgt := filepath.Join(t.TempDir(), "builder")
	e.build(ctx, nil, "--target", "builder", "-o", "type=local,dest="+tgt)
	if got := readFile(t, filepath.Join(tgt, "artifact")); got != "built\n" {
		t.Errorf("--target builder: /artifact = %q", got)
	}
	if _, err := os.Stat(filepath.Join(tgt, "variant")); err == nil {
		t.Errorf("--target builder exported the final stage")
	}

	// Same artifact from a different command: the builder RUN executes, the
	// COPY --from in the final stage keeps its key and stays cached.
	writeFiles(t, ctx, map[string]string{"Dockerfile": dockerfile("printf 'built\\n' > /artifact")})
	b2 := e.build(ctx, nil, "-t", "multi:2")
	cp1, cp2 := b1.find(t, "COPY --from=builder"), b2.find(t, "COPY --from=builder")
	if b2.steps[cp2].Key != b1.steps[cp1].Key || b2.steps[cp2].Status != "cached" {
		t.Errorf("COPY --from=builder of identical content: %s key %s, before %s", b2.steps[cp2].Status, short(b2.steps[cp2].Key), short(b1.steps[cp1].Key))
	}
	if b2.res.ImageID != b1.res.ImageID {
		t.Errorf("identical final content gave a new image: %s vs %s", b2.res.ImageID, b1.res.ImageID)
	}
}

// RUN steps that change nothing give identical empty layers; a chain of them
// must still mount and build (the same layer twice in a row below a RUN).
func TestRepeatedEmptyLayers(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, "FROM busybox\nRUN true\nRUN true\nRUN true\nRUN echo ok > /ok.txt\n", nil)
	out := filepath.Join(t.TempDir(), "rootfs")
	b := e.build(ctx, nil, "-t", "empties:1", "-o", "type=local,dest="+out)
	b.checkConsistent(t)
	if got := readFile(t, filepath.Join(out, "ok.txt")); got != "ok\n" {
		t.Errorf("/ok.txt = %q", got)
	}
	// --no-cache executes them all again.
	nc := e.build(ctx, nil, "-t", "empties:1", "--no-cache")
	for _, s := range nc.steps[1:] {
		if s.Status != "done" {
			t.Errorf("--no-cache: step %d %q is %s, want done", s.Step, s.Instruction, s.Status)
		}
	}
}

// RUN's environment is completed as runc completes a container's: HOME
// from the user's passwd entry ("/" without one), HOSTNAME; the image
// config gains neither. COPY --chown=UID alone uses UID as the gid too,
// and a name its passwd entry's uid and primary gid (BuildKit readUser).
func TestRunHomeAndChownDefaults(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, `FROM busybox
RUN echo "home=$HOME host=$HOSTNAME" > /root.txt
USER app
RUN echo "home=$HOME" > /tmp/app.txt
USER 4242
RUN echo "home=$HOME" > /tmp/nobody.txt
USER root
COPY --chown=4242 f.txt /uid-only
COPY --chown=app f.txt /by-name
COPY --chown=1000:0 f.txt /uid-gid
`, map[string]string{"f.txt": "x\n"})
	out := filepath.Join(t.TempDir(), "rootfs")
	e.build(ctx, nil, "-t", "runenv:1", "-o", "type=local,dest="+out)
	for file, want := range map[string]string{"root.txt": "home=/root host=minibuild", "tmp/app.txt": "home=/home/app", "tmp/nobody.txt": "home=/"} {
		if got := strings.TrimSpace(readFile(t, filepath.Join(out, file))); got != want {
			t.Errorf("/%s: %q, want %q", file, got, want)
		}
	}
	for file, want := range map[string][2]uint32{"uid-only": {4242, 4242}, "by-name": {1000, 1000}, "uid-gid": {1000, 0}} {
		info, err := os.Stat(filepath.Join(out, file))
		if err != nil {
			t.Fatal(err)
		}
		if st := info.Sys().(*syscall.Stat_t); st.Uid != want[0] || st.Gid != want[1] {
			t.Errorf("/%s is owned by %d:%d, want %d:%d", file, st.Uid, st.Gid, want[0], want[1])
		}
	}
	cfg := imageConfig(t, decodeJSON(t, "inspect", e.ok("inspect", "runenv:1").stdout))
	if env := strings.Join(strs(field(cfg, "Env")), "\n"); strings.Contains(env, "HOME") || strings.Contains(env, "HOSTNAME") {
		t.Errorf("RUN's defaults reached the config Env:\n%s", env)
	}
}
