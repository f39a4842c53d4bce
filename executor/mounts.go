package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/opencontainers/go-digest"

	"github.com/minibuild/minibuild/buildctx"
	"github.com/minibuild/minibuild/copier"
	"github.com/minibuild/minibuild/mount"
	"github.com/minibuild/minibuild/sandbox"
	"github.com/minibuild/minibuild/snapshot"
)

// runMount is one RUN --mount, checked and keyed at prepare time.
type runMount struct {
	m      *instructions.Mount
	target string // absolute, resolved against WORKDIR
	// bind: the source tree and the path inside it
	src    *buildctx.Context
	srcRel string
	// bind: the content digest of the source tree, a key input, and the
	// stage view it was read from (closed when the step is done)
	tree digest.Digest
	view *buildctx.Context
	// cache: its id (default: the target)
	cacheID string
	// secret: id, the value (nil when optional and absent), env name
	secretID string
	secret   []byte
	envName  string
}

// prepareMounts checks a RUN's --mount flags and returns them; a bind
// mount's content (not its path) is a key input, as in BuildKit. Cache
// mounts and secrets never are: only the instruction text keys them. On
// an error it returns the mounts made so far, for release.
func (s *step) prepareMounts(ctx context.Context, c *instructions.RunCommand) (mounts []*runMount, err error) {
	workdir := s.run.state.config.Config.WorkingDir
	if workdir == "" {
		workdir = "/"
	}
	for _, m := range instructions.GetMounts(c) {
		rm := &runMount{m: m, target: m.Target}
		if rm.target != "" && !path.IsAbs(rm.target) {
			rm.target = path.Join(workdir, rm.target)
		}
		if rm.target != "" {
			rm.target = path.Clean(rm.target)
		}
		switch m.Type {
		case instructions.MountTypeSSH:
			return mounts, fmt.Errorf("--mount=type=ssh is not supported")
		case instructions.MountTypeSecret:
			id := m.CacheID
			if m.Source != "" {
				id = m.Source
			}
			if id == "" {
				if m.Target == "" {
					return mounts, fmt.Errorf("--mount=type=secret: one of id, source or target is required")
				}
				id = path.Base(m.Target)
			}
			rm.secretID = id
			if m.Env != nil {
				rm.envName = *m.Env
				if rm.envName == "" {
					rm.envName = id
				}
			}
			if m.Target == "" && m.Env == nil {
				rm.target = "/run/secrets/" + path.Base(id)
			}
			v, ok := s.run.b.opts.Secrets[id]
			if !ok && m.Required {
				return mounts, fmt.Errorf("secret %q is required but was not provided (use --secret id=%s,src=FILE)", id, id)
			}
			if ok {
				rm.secret = v
			}
		case instructions.MountTypeCache:
			if rm.target == "" {
				return mounts, fmt.Errorf("--mount=type=cache needs a target")
			}
			if m.From != "" || m.Source != "" {
				return mounts, fmt.Errorf("--mount=type=cache with from= or source= is not supported yet")
			}
			if rm.cacheID = m.CacheID; rm.cacheID == "" {
				rm.cacheID = rm.target
			}
			s.run.b.usedCacheMount(rm.cacheID, string(m.CacheSharing))
		case instructions.MountTypeTmpfs:
			if rm.target == "" {
				return mounts, fmt.Errorf("--mount=type=tmpfs needs a target")
			}
		case instructions.MountTypeBind:
			if rm.target == "" {
				return mounts, fmt.Errorf("--mount=type=bind needs a target")
			}
			if err := s.prepareBind(ctx, rm); err != nil {
				return append(mounts, rm), err
			}
		default:
			return mounts, fmt.Errorf("--mount=type=%s is not supported", m.Type)
		}
		if rm.target == "/" {
			return mounts, fmt.Errorf("--mount=type=%s: cannot mount over /", m.Type)
		}
		mounts = append(mounts, rm)
	}
	return mounts, nil
}

// prepareBind resolves a bind mount's source in the build context (or in
// the stage or image from= names) and digests its content for the key.
func (s *step) prepareBind(ctx context.Context, rm *runMount) error {
	var src *buildctx.Context
	var err error
	if rm.m.From != "" {
		if src, err = s.run.fromSource(ctx, rm.m.From); err != nil {
			return err
		}
		rm.view = src
	} else if src, err = s.run.b.context(ctx); err != nil {
		return err
	}
	rel := strings.TrimPrefix(path.Clean("/"+rm.m.Source), "/")
	if _, ok := src.Lookup(rel); !ok {
		return fmt.Errorf("--mount=type=bind: source %q not found (or excluded by .dockerignore)", rm.m.Source)
	}
	rm.src, rm.srcRel = src, rel
	if rm.tree, err = copier.TreeDigest(ctx, src, rel); err != nil {
		return fmt.Errorf("--mount=type=bind,source=%s: %w", rm.m.Source, err)
	}
	return nil
}

// mountSetup is what a RUN's mounts need while it runs.
type mountSetup struct {
	mounts  []mount.Mount
	files   []sandbox.File
	points  []mount.Point
	env     []string
	release []func()
}

func (ms *mountSetup) Release() {
	for i := len(ms.release) - 1; i >= 0; i-- {
		ms.release[i]()
	}
	ms.release = nil
}

// setupMounts acquires cache dirs (waiting as sharing= says), makes
// writable binds' scratch dirs and turns secrets into tmpfs files or
// environment variables.
func (s *step) setupMounts(ctx context.Context, mounts []*runMount) (*mountSetup, error) {
	ms := &mountSetup{}
	sn := s.run.b.opts.Snapshots
	for _, rm := range mounts {
		m := rm.m
		switch m.Type {
		case instructions.MountTypeSecret:
			if rm.secret == nil {
				continue // optional and not provided: nothing to mount
			}
			if rm.envName != "" {
				ms.env = append(ms.env, rm.envName+"="+string(rm.secret))
			}
			if rm.target == "" {
				continue
			}
			mode, uid, gid := uint32(0o400), uint32(0), uint32(0)
			if m.Mode != nil {
				mode = uint32(*m.Mode)
			}
			if m.UID != nil {
				uid = uint32(*m.UID)
			}
			if m.GID != nil {
				gid = uint32(*m.GID)
			}
			ms.files = append(ms.files, sandbox.File{Target: rm.target, Data: rm.secret, Mode: mode, UID: uid, GID: gid})
			ms.points = append(ms.points, mount.Point{Path: rm.target})
		case instructions.MountTypeCache:
			id := rm.cacheID
			opts := snapshot.CacheMountOptions{Sharing: snapshot.Sharing(m.CacheSharing)}
			if m.Mode != nil {
				mode := uint32(*m.Mode)
				opts.Mode = &mode
			}
			if m.UID != nil {
				opts.UID = int(*m.UID)
			}
			if m.GID != nil {
				opts.GID = int(*m.GID)
			}
			s.restoreCacheMount(ctx, id, opts)
			cm, err := sn.CacheMount(ctx, id, opts)
			if err != nil {
				ms.Release()
				return nil, err
			}
			ms.release = append(ms.release, cm.Release)
			ms.mounts = append(ms.mounts, mount.Mount{Target: rm.target, Type: "bind", Source: cm.Dir, ReadOnly: m.ReadOnly})
			ms.points = append(ms.points, mount.Point{Path: rm.target, Dir: true})
		case instructions.MountTypeTmpfs:
			opts := []string{"mode=1777"}
			if m.SizeLimit > 0 {
				opts = append(opts, "size="+strconv.FormatInt(m.SizeLimit, 10))
			}
			ms.mounts = append(ms.mounts, mount.Mount{Target: rm.target, Type: "tmpfs", Source: "tmpfs", Options: opts})
			ms.points = append(ms.points, mount.Point{Path: rm.target, Dir: true})
		case instructions.MountTypeBind:
			mnt, dir, err := s.bindMount(ctx, rm, ms)
			if err != nil {
				ms.Release()
				return nil, err
			}
			ms.mounts = append(ms.mounts, mnt)
			ms.points = append(ms.points, mount.Point{Path: rm.target, Dir: dir})
		}
	}
	return ms, nil
}

// bindMount makes the sandbox mount of a bind, and tells whether its
// target is a dir: the snapshotter's view of the source (read-only, or
// with rw a writable layer whose writes are thrown away), or a filtered
// copy when .dockerignore leaves something under it out.
func (s *step) bindMount(ctx context.Context, rm *runMount, ms *mountSetup) (mount.Mount, bool, error) {
	host, err := securejoin.SecureJoin(rm.src.Dir(), filepath.FromSlash(rm.srcRel))
	if err != nil {
		return mount.Mount{}, false, err
	}
	fi, err := os.Stat(host)
	dir := err == nil && fi.IsDir()
	sn := s.run.b.opts.Snapshots
	// .dockerignore'd files must not show: bind a filtered copy then.
	if ignored, err := hasIgnored(rm.src, rm.srcRel, host); err != nil {
		return mount.Mount{}, false, err
	} else if ignored {
		tmp, release, err := sn.TempDir("bind")
		if err != nil {
			return mount.Mount{}, false, err
		}
		ms.release = append(ms.release, func() { release() })
		dst := filepath.Join(tmp, "src")
		if err := copyContextTree(rm.src, rm.srcRel, dst); err != nil {
			return mount.Mount{}, false, fmt.Errorf("stage bind mount source: %w", err)
		}
		return mount.Mount{Target: rm.target, Type: "bind", Source: dst, ReadOnly: rm.m.ReadOnly}, dir, nil
	}
	mnt, release, err := sn.BindView(ctx, host, rm.target, !rm.m.ReadOnly)
	if err != nil {
		return mount.Mount{}, false, err
	}
	ms.release = append(ms.release, func() { release() })
	return mnt, dir, nil
}

// hasIgnored tells whether anything under host (the context path rel) is
// left out of the context, by .dockerignore.
func hasIgnored(src *buildctx.Context, rel, host string) (bool, error) {
	ignored := false
	err := filepath.WalkDir(host, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r, err := filepath.Rel(host, p)
		if err != nil {
			return err
		}
		if _, ok := src.Lookup(path.Join(rel, filepath.ToSlash(r))); !ok {
			ignored = true
			return filepath.SkipAll
		}
		return nil
	})
	return ignored, err
}

// copyContextTree copies the context entries at and under rel into dst:
// dirs, regular files and symlinks, with modes and owners.
func copyContextTree(src *buildctx.Context, rel, dst string) error {
	root, ok := src.Lookup(rel)
	if !ok {
		return fmt.Errorf("%s: not in the context", rel)
	}
	files := []*buildctx.File{root}
	for _, f := range src.Files() {
		if rel == "" || strings.HasPrefix(f.Path, rel+"/") {
			files = append(files, f)
		}
	}
	slices.SortFunc(files, func(a, b *buildctx.File) int { return strings.Compare(a.Path, b.Path) })
	for _, f := range files {
		name := strings.TrimPrefix(strings.TrimPrefix(f.Path, rel), "/")
		if f == root {
			name = ""
		}
		p := filepath.Join(dst, filepath.FromSlash(name))
		switch {
		case f.Mode.IsDir():
			if err := os.Mkdir(p, 0o700); err != nil {
				return err
			}
		case f.Mode&fs.ModeSymlink != 0:
			if err := os.Symlink(f.Link, p); err != nil {
				return err
			}
		case f.Mode.IsRegular():
			in, err := src.Open(f)
			if err != nil {
				return err
			}
			out, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err == nil {
				_, err = io.Copy(out, in)
				err = errors.Join(err, out.Close())
			}
			in.Close()
			if err != nil {
				return err
			}
		default:
			continue
		}
		if err := os.Lchown(p, f.UID, f.GID); err != nil {
			return err
		}
		if f.Mode&fs.ModeSymlink == 0 {
			if err := os.Chmod(p, f.Mode); err != nil {
				return err
			}
		}
	}
	return nil
}

// redactor replaces secret values in RUN output, so that a step that
// prints one does not put it in a log line or an error.
func redactor(mounts []*runMount) func(string) string {
	var values []string
	for _, rm := range mounts {
		v := strings.TrimSpace(string(rm.secret))
		if len(v) < 4 {
			continue // too short to tell from ordinary output
		}
		values = append(values, v)
		for _, l := range strings.Split(v, "\n") {
			if l = strings.TrimSpace(l); len(l) >= 4 && l != v {
				values = append(values, l)
			}
		}
	}
	if len(values) == 0 {
		return nil
	}
	// Longest first, so a whole value is replaced before its lines.
	slices.SortFunc(values, func(a, b string) int { return len(b) - len(a) })
	return func(line string) string {
		for _, v := range values {
			line = strings.ReplaceAll(line, v, "****")
		}
		return line
	}
}
