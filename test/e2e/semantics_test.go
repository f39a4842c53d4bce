// Instruction semantics as docker and BuildKit have them, each found by
// comparing minibuild's images with theirs.

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A CMD reused from the cache still counts as set in the stage: an
// ENTRYPOINT that executes after a later miss keeps it (docker resets
// only an inherited CMD).
func TestEntrypointKeepsCachedCmd(t *testing.T) {
	e := newEnv(t)
	df := `FROM busybox
CMD ["serve"]
RUN echo %s > /v
ENTRYPOINT ["/bin/app"]
`
	ctx := project(t, fmt.Sprintf(df, "one"), nil)
	e.build(ctx, nil, "-t", "ep:1")
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(fmt.Sprintf(df, "two")), 0o644); err != nil {
		t.Fatal(err)
	}
	b := e.build(ctx, nil, "-t", "ep:2")
	if s := b.steps[b.find(t, "CMD")]; s.Status != "cached" {
		t.Fatalf("CMD should be reused:%s", b.describe())
	}
	for _, tag := range []string{"ep:1", "ep:2"} {
		cfg := imageConfig(t, decodeJSON(t, "inspect "+tag, e.ok("inspect", tag).stdout))
		if got := fmt.Sprint(strs(field(cfg, "Cmd"))); got != "[serve]" {
			t.Errorf("%s: Cmd = %s, want [serve]", tag, got)
		}
	}
}

// WORKDIR after USER creates the missing directories owned by that user,
// as BuildKit does, so that the user can write in its working dir.
func TestWorkdirOwnedByUser(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, `FROM busybox
USER app
WORKDIR /home/app/work
RUN touch made-by-app && stat -c '%u:%g' /home/app/work /home/app > /tmp/owners && cat /tmp/owners
`, nil)
	b := e.build(ctx, nil, "-t", "wd:1")
	if !strings.Contains(b.stderr, "1000:1000") {
		t.Errorf("WORKDIR dirs not owned by app:\n%s", tail(b.stderr, 20))
	}
	out := t.TempDir()
	e.build(ctx, nil, "-o", "type=local,dest="+out)
	fi, err := os.Stat(filepath.Join(out, "home/app/work/made-by-app"))
	if err != nil {
		t.Fatalf("RUN as app could not write in its WORKDIR: %v", err)
	}
	_ = fi
}

// A stage built FROM another stage runs that stage's ONBUILD instructions
// first, and its own config starts without them (BuildKit's
// initOnBuildTriggers over the base stage's commands).
func TestOnbuildFromStage(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, `FROM busybox AS base
ONBUILD RUN echo trigger > /triggered
FROM base
LABEL x=y
`, nil)
	out := filepath.Join(t.TempDir(), "rootfs")
	b := e.build(ctx, nil, "-t", "ob:1", "-o", "type=local,dest="+out)
	if got := strings.TrimSpace(readFile(t, filepath.Join(out, "triggered"))); got != "trigger" {
		t.Errorf("the base stage's ONBUILD RUN did not run in the stage built FROM it: %q\n%s", got, b.describe())
	}
	cfg := imageConfig(t, decodeJSON(t, "inspect ob:1", e.ok("inspect", "ob:1").stdout))
	if got := strs(field(cfg, "OnBuild")); len(got) != 0 {
		t.Errorf("OnBuild = %q, want none (triggers run once)", got)
	}
}

// An ARG given as --build-arg X= (set, empty) and one left unset are
// different environments for RUN, so they must not share a cache key.
func TestEmptyBuildArgIsNotUnset(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, `FROM busybox
ARG X
RUN if [ -n "${X+set}" ]; then echo set; else echo unset; fi > /x
`, nil)
	e.build(ctx, nil, "-t", "arg:unset")
	b := e.build(ctx, nil, "-t", "arg:empty", "--build-arg", "X=")
	if s := b.steps[b.find(t, "RUN")]; s.Status == "cached" {
		t.Errorf("RUN with X set to \"\" reused the result of X unset:%s", b.describe())
	}
	out := t.TempDir()
	e.build(ctx, nil, "--build-arg", "X=", "-o", "type=local,dest="+out)
	if got := strings.TrimSpace(readFile(t, filepath.Join(out, "x"))); got != "set" {
		t.Errorf("/x = %q, want set", got)
	}
}

// A RUN heredoc that starts with "#!" runs with its own interpreter, as a
// script (BuildKit), not as text for /bin/sh -c.
func TestRunHeredocShebang(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, "FROM busybox\nRUN <<EOF\n#!/bin/sh -e\nfalse\necho after > /after\nEOF\n", nil)
	b := e.buildJSON(ctx, nil)
	if b.code == 0 {
		t.Errorf("the script runs with sh -e, so false must fail the build:\n%s", b.result)
	}
	ctx = project(t, "FROM busybox\nRUN <<EOF\n#!/bin/sh\necho \"$0\" > /zero\nEOF\n", nil)
	out := t.TempDir()
	e.build(ctx, nil, "-o", "type=local,dest="+out)
	if got := strings.TrimSpace(readFile(t, filepath.Join(out, "zero"))); got != "/dev/pipes/EOF" {
		t.Errorf("$0 = %q, want /dev/pipes/EOF", got)
	}
	if _, err := os.Stat(filepath.Join(out, "dev/pipes")); err == nil {
		t.Errorf("/dev/pipes leaked into the image")
	}
}

// WORKDIR through a symlink resolves inside the rootfs: an existing link
// to a dir is used as is, a dangling one gets its target created (absolute
// targets against the rootfs root), and the link itself stays a link.
func TestWorkdirThroughSymlink(t *testing.T) {
	e := newEnv(t)
	ctx := project(t, `FROM busybox
RUN mkdir -p /srv/real && ln -s /srv/real /app && ln -s /srv/later /dangling && ln -s ../../../../srv/up /escape
WORKDIR /app
RUN pwd -P > /app-pwd
WORKDIR /dangling/sub
RUN pwd -P > /dangling-pwd
WORKDIR /escape
RUN pwd -P > /escape-pwd && readlink /escape > /escape-link
`, nil)
	out := filepath.Join(t.TempDir(), "rootfs")
	e.build(ctx, nil, "-o", "type=local,dest="+out)
	for file, want := range map[string]string{"app-pwd": "/srv/real", "dangling-pwd": "/srv/later/sub", "escape-pwd": "/srv/up",
		"escape-link": "../../../../srv/up"} {
		if got := strings.TrimSpace(readFile(t, filepath.Join(out, file))); got != want {
			t.Errorf("/%s = %q, want %q", file, got, want)
		}
	}
	// (-o type=local drops /escape itself: go-containerregistry's flattening
	// refuses relative links that leave the rootfs.)
	for _, link := range []string{"app", "dangling"} {
		if fi, err := os.Lstat(filepath.Join(out, link)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("/%s is no longer a symlink: %v %v", link, fi, err)
		}
	}
}

// COPY follows the image's symlinks as docker does: into a symlinked dir
// (Debian's /bin → usr/bin), into a link whose target is outside the
// root's reach (it resolves inside), and the dirs it writes under keep
// their mode and owner (/tmp stays 1777), on both snapshotters.
func TestCopyThroughImageSymlinks(t *testing.T) {
	for _, snap := range []string{"overlay", "copy"} {
		t.Run(snap, func(t *testing.T) {
			e := newEnv(t)
			ctx := project(t, `FROM busybox
RUN mkdir -p /usr/lib/real && ln -s /usr/lib/real /opt && ln -s /../../../usr/lib/real /escape && chown 1000:1000 /home/app
COPY tool /opt/tool
COPY tool /escape/tool2
COPY f /tmp/x/f
COPY --chown=app f /home/app/f
WORKDIR /tmp/w
RUN /opt/tool && stat -c '%a' /tmp > /tmp-mode && stat -c '%u' /home/app > /home-owner && readlink /opt > /opt-link
`, map[string]string{"tool": "#!/bin/sh\necho tool ran > /tool-ran\n", "f": "x\n"})
			if err := os.Chmod(filepath.Join(ctx, "tool"), 0o755); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "rootfs")
			e.build(ctx, nil, "--snapshotter="+snap, "-o", "type=local,dest="+out)
			for file, want := range map[string]string{"tool-ran": "tool ran", "tmp-mode": "1777", "home-owner": "1000", "opt-link": "/usr/lib/real",
				"usr/lib/real/tool2": "#!/bin/sh"} {
				if got := strings.TrimSpace(readFile(t, filepath.Join(out, file))); !strings.HasPrefix(got, want) {
					t.Errorf("/%s = %q, want %q", file, got, want)
				}
			}
		})
	}
}
