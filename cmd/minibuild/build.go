package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/executor"
	"github.com/minibuild/minibuild/export"
	"github.com/minibuild/minibuild/internal/regular"
	"github.com/minibuild/minibuild/parser"
	"github.com/minibuild/minibuild/snapshot"
	"github.com/minibuild/minibuild/store"
)

// buildOptions are the build flags, docker/buildx compatible.
type buildOptions struct {
	global    *globalOptions
	tags      []string
	file      string
	buildArgs []string
	target    string
	noCache   bool
	pull      bool
	labels    []string
	progress  string
	quiet     bool
	iidfile   string
	platform  string
	outputs   []string
	insecure  []string
	jobs      int
	remote    remoteOptions
	// --metadata-file, --annotation, --build-context
	metadataFile string
	annotations  []string
	contexts     []string
	allow        []string // --allow entitlements
	addHosts     []string // --add-host host:ip
	// RUN sandbox: --secret, --network, --snapshotter
	secrets     []string
	network     string
	snapshotter string
	// geteuid is os.Geteuid (a test can pretend not to be root).
	geteuid func() int
}

func addBuildFlags(cmd *cobra.Command, b *buildOptions) {
	f := cmd.Flags()
	f.StringArrayVarP(&b.tags, "tag", "t", nil, "name and optionally a tag (name:tag); repeatable")
	f.StringVarP(&b.file, "file", "f", "", "path to the Dockerfile (default CONTEXT/Dockerfile, else CONTEXT/Containerfile; - reads standard input)")
	f.StringArrayVar(&b.buildArgs, "build-arg", nil, "build-time variable K=V, or K to take it from the environment")
	f.StringVar(&b.target, "target", "", "stage to build (default the last)")
	f.BoolVar(&b.noCache, "no-cache", false, "do not use the cache")
	f.BoolVar(&b.pull, "pull", false, "always pull the base images")
	f.StringArrayVar(&b.labels, "label", nil, "set an image label K=V; repeatable")
	f.StringVar(&b.progress, "progress", "auto", "progress output: auto, plain, tty, json or quiet")
	f.BoolVarP(&b.quiet, "quiet", "q", false, "print only the image id")
	f.StringVar(&b.iidfile, "iidfile", "", "write the image id to this file")
	f.StringVar(&b.platform, "platform", "", "target platform (only linux/amd64)")
	f.StringArrayVarP(&b.outputs, "output", "o", nil, "output: type=oci|docker|tar,dest=FILE.tar|-, type=local,dest=DIR, type=registry[,name=REF], type=image,name=REF[,push=true], or - (a tar of the rootfs on stdout)")
	f.StringVar(&b.metadataFile, "metadata-file", "", "write the build result's metadata (buildx's keys: containerimage.digest, …) to this file")
	f.StringArrayVar(&b.annotations, "annotation", nil, "add a manifest annotation KEY=VALUE (or manifest:KEY=VALUE); repeatable")
	f.StringArrayVar(&b.insecure, "insecure-registry", nil, "registry host reached over plain http")
	f.IntVar(&b.jobs, "jobs", 0, "how many stages may build at once (default: the number of CPUs)")
	addRemoteFlags(cmd, &b.remote)
	f.StringArrayVar(&b.addHosts, "add-host", nil, "add a host-to-IP mapping (host:ip) to RUN's /etc/hosts; repeatable")
	f.StringArrayVar(&b.allow, "allow", nil, "extra privileges (buildx entitlements): security.insecure lets RUN --security=insecure run without seccomp and with all capabilities; network.host is always allowed")
	f.StringArrayVar(&b.contexts, "build-context", nil, "named context NAME=DIR or NAME=docker-image://REF, for FROM NAME and --from=NAME; repeatable")
	f.StringArrayVar(&b.secrets, "secret", nil, "secret for RUN --mount=type=secret: id=ID,src=FILE or id=ID,env=VAR; repeatable")
	f.StringVar(&b.network, "network", "default", "network of RUN steps without --network: default, none or host")
	f.StringVar(&b.snapshotter, "snapshotter", "auto", "how RUN sees its rootfs: overlay, copy, or auto (overlay, copying where it cannot mount)")
}

// remoteOptions are the build's registry flags.
type remoteOptions struct {
	push      bool
	cacheFrom []string
	cacheTo   []string
}

func addRemoteFlags(cmd *cobra.Command, r *remoteOptions) {
	f := cmd.Flags()
	f.BoolVar(&r.push, "push", false, "push the image to the registry of each -t tag")
	f.StringArrayVar(&r.cacheFrom, "cache-from", nil, "import cache: type=registry,ref=REF | type=local,src=DIR | REF (an image with inline records); repeatable")
	f.StringArrayVar(&r.cacheTo, "cache-to", nil, "export cache: type=registry,ref=REF[,mode=min|max][,ignore-error=true] | type=local,dest=DIR[,…] | type=inline")
}

func newBuildCommand(g *globalOptions) *cobra.Command {
	b := &buildOptions{global: g}
	cmd := &cobra.Command{
		Use:   "build [flags] CONTEXT|-",
		Short: "Build an image from a Dockerfile (CONTEXT - is a tar on standard input)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runBuild(cmd.Context(), b, args[0])
		},
	}
	addBuildFlags(cmd, b)
	return cmd
}

// runBuild is the build command: flags → options → export.Build → exit
// code. Progress is closed in one place, whatever happens.
func runBuild(ctx context.Context, b *buildOptions, contextDir string) error {
	start := time.Now()
	prog, err := newProgress(b.progressMode(), os.Stderr)
	if err != nil {
		return err
	}
	res, err := b.run(ctx, contextDir, prog)
	if err == nil && res.StepsBuilt > 0 {
		// Only a build that wrote something can have grown the store past
		// the cap: a fully cached rebuild pays nothing for the check.
		var line string
		if line, err = autoGC(b.global); line != "" {
			prog.Event(executor.Event{Kind: executor.KindWarning, Line: line})
		}
	}
	if err == nil {
		prog.Result(res, b.tags, time.Since(start))
	}
	prog.Close()
	if err != nil {
		return err
	}
	if b.progressMode() == "quiet" {
		fmt.Println(res.ID.String())
	}
	return nil
}

// progressMode is --progress, or quiet with -q.
func (b *buildOptions) progressMode() string {
	if b.quiet {
		return "quiet"
	}
	return b.progress
}

// needRoot is the error a build run without root ends with, before any work.
const needRoot = "minibuild build needs root: RUN uses namespaces and overlayfs, and extraction sets file owners"

// run checks every flag, opens the store and builds under the export plan.
func (b *buildOptions) run(ctx context.Context, contextDir string, prog progress) (*executor.Result, error) {
	geteuid := b.geteuid
	if geteuid == nil {
		geteuid = os.Geteuid
	}
	if geteuid() != 0 {
		return nil, errors.New(needRoot)
	}
	if b.platform != "" && b.platform != "linux/amd64" {
		return nil, fmt.Errorf("--platform %s: only linux/amd64 is supported", b.platform)
	}
	if b.jobs < 0 {
		return nil, fmt.Errorf("--jobs %d: give a number of stages (0 = the number of CPUs)", b.jobs)
	}
	blobs, err := newBlobProgress(b.progressMode(), os.Stderr)
	if err != nil {
		return nil, err
	}
	plan, err := export.NewPlan(export.Request{
		Tags:         b.tags,
		Outputs:      b.outputs,
		Push:         b.remote.push,
		CacheFrom:    b.remote.cacheFrom,
		CacheTo:      b.remote.cacheTo,
		IIDFile:      b.iidfile,
		Registry:     export.Registry{Insecure: b.insecure, Progress: blobs.event},
		Annotations:  b.annotations,
		MetadataFile: b.metadataFile,
	})
	if err != nil {
		return nil, err
	}
	if err := b.checkStdout(plan, isTerminal(os.Stdout)); err != nil {
		return nil, err
	}
	var stdinDockerfile []byte
	if contextDir == "-" {
		sc, err := b.stdinContext(ctx)
		if err != nil {
			return nil, err
		}
		defer sc.Release()
		contextDir, stdinDockerfile = sc.Dir, sc.Dockerfile
	}
	opts, err := b.executorOptions(contextDir, stdinDockerfile)
	if err != nil {
		return nil, err
	}
	opts.Progress = prog.Event
	if err := openStores(b.global.root, b.snapshotter, &opts); err != nil {
		return nil, err
	}
	if err := applyDiskFlags(b.global, &opts); err != nil {
		return nil, err
	}
	return export.Build(ctx, opts, plan)
}

// checkStdout refuses what would mix with, or be lost on, an output to
// standard output: -q's image id, and a terminal (as docker refuses).
func (b *buildOptions) checkStdout(plan *export.Plan, stdoutIsTerminal bool) error {
	if !plan.UsesStdout() {
		return nil
	}
	if b.progressMode() == "quiet" {
		return errors.New("-q (--progress=quiet) prints the image id on standard output, which the -o output writes to; use --iidfile")
	}
	if stdoutIsTerminal {
		return errors.New("an -o output to standard output (-) would be written to the terminal: redirect it, or give dest=FILE")
	}
	return nil
}

// stdinContext reads the context `-` from stdin (a tar, or a lone
// Dockerfile) into a temp dir under --root; -f - cannot share stdin.
func (b *buildOptions) stdinContext(ctx context.Context) (*export.StdinContext, error) {
	if b.file == "-" {
		return nil, errors.New("context - and -f - both want standard input")
	}
	sc, err := export.ContextFromTar(ctx, os.Stdin, filepath.Join(b.global.root, "tmp"))
	if err != nil {
		return nil, err
	}
	if sc.Dockerfile != nil && b.file != "" {
		sc.Release()
		return nil, errors.New("standard input holds a Dockerfile, not a context tar: -f has nothing to name")
	}
	if b.file != "" && !filepath.IsAbs(b.file) {
		b.file = filepath.Join(sc.Dir, b.file) // -f names a file in the context tar, as docker
	}
	return sc, nil
}

// executorOptions turns the build's input flags into executor.Options,
// without the stores (openStores) and progress. dockerfile, when not nil,
// is the Dockerfile read from stdin in place of a context.
func (b *buildOptions) executorOptions(contextDir string, dockerfile []byte) (executor.Options, error) {
	var opts executor.Options
	if fi, err := os.Stat(contextDir); err != nil || !fi.IsDir() {
		return opts, fmt.Errorf("context %s: not a directory", contextDir)
	}
	if abs, err := filepath.Abs(contextDir); err == nil {
		contextDir = abs
	}
	dfName := "Dockerfile"
	var err error
	if dockerfile == nil {
		if dockerfile, dfName, err = readDockerfile(b.file, contextDir); err != nil {
			return opts, err
		}
	}
	buildArgs, err := parser.ParseBuildArgs(b.buildArgs, os.LookupEnv)
	if err != nil {
		return opts, err
	}
	labels, err := keyValues(b.labels, "--label")
	if err != nil {
		return opts, err
	}
	epoch, err := sourceDateEpoch()
	if err != nil {
		return opts, err
	}
	secrets, err := loadSecrets(b.secrets, os.LookupEnv)
	if err != nil {
		return opts, err
	}
	contexts, err := namedContexts(b.contexts)
	if err != nil {
		return opts, err
	}
	insecure, err := entitlements(b.allow)
	if err != nil {
		return opts, err
	}
	hosts, err := extraHosts(b.addHosts)
	if err != nil {
		return opts, err
	}
	return executor.Options{
		Services: executor.Services{StateDir: filepath.Join(b.global.root, "buildctx")},
		Input: executor.Input{
			ContextDir:     contextDir,
			Dockerfile:     dockerfile,
			DockerfileName: dfName,
			BuildArgs:      buildArgs,
			Target:         b.target,
			Labels:         labels,
			Secrets:        secrets,
			Contexts:       contexts,
		},
		Policy: executor.Policy{
			NoCache:       b.noCache,
			Pull:          b.pull,
			Epoch:         epoch,
			Insecure:      b.insecure,
			Network:       b.network,
			Jobs:          b.jobs,
			AllowInsecure: insecure,
			ExtraHosts:    hosts,
		},
	}, nil
}

// extraHosts checks --add-host values, docker's "host:ip" (or buildx's
// "host=ip"), and returns them as "host:ip".
func extraHosts(flags []string) ([]string, error) {
	var out []string
	for _, f := range flags {
		name, ip, ok := strings.Cut(f, "=")
		if !ok {
			name, ip, ok = strings.Cut(f, ":")
		}
		if !ok || name == "" || net.ParseIP(ip) == nil {
			return nil, fmt.Errorf("--add-host %q: want HOST:IP (an IP address; host-gateway is not supported)", f)
		}
		out = append(out, name+":"+ip)
	}
	return out, nil
}

// entitlements parses --allow as buildx does: security.insecure, and
// network.host (which RUN --network=host never needed here).
func entitlements(flags []string) (insecure bool, err error) {
	for _, f := range flags {
		for _, e := range strings.Split(f, ",") {
			switch e {
			case "security.insecure":
				insecure = true
			case "network.host":
			default:
				return false, fmt.Errorf("--allow %s: unknown entitlement (want security.insecure or network.host)", e)
			}
		}
	}
	return insecure, nil
}

// namedContexts parses --build-context NAME=VALUE: a directory (made
// absolute, and it must be one) or docker-image://REF. Other BuildKit
// sources (git, http, oci-layout://, target:) are refused by name.
func namedContexts(flags []string) (map[string]string, error) {
	if len(flags) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, f := range flags {
		name, v, ok := strings.Cut(f, "=")
		if !ok || name == "" || v == "" {
			return nil, fmt.Errorf("--build-context %q: want NAME=DIR or NAME=docker-image://REF", f)
		}
		if strings.HasPrefix(v, "docker-image://") {
			out[name] = v
			continue
		}
		if scheme, _, found := strings.Cut(v, "://"); found {
			return nil, fmt.Errorf("--build-context %s: %s:// sources are not supported (a directory or docker-image://REF)", f, scheme)
		}
		abs, err := filepath.Abs(v)
		if err != nil {
			return nil, err
		}
		if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("--build-context %s: %s is not a directory", f, v)
		}
		out[name] = abs
	}
	return out, nil
}

// openStores opens what a build reads and writes under root: the content
// store, the snapshotter (of the --snapshotter kind, cleaned of what a
// killed build left) and the cache index.
func openStores(root, snapshotter string, opts *executor.Options) error {
	kind, err := snapshot.ParseKind(snapshotter)
	if err != nil {
		return err
	}
	st, err := store.Open(root)
	if err != nil {
		return err
	}
	snaps, err := snapshot.New(root, st)
	if err != nil {
		return err
	}
	snaps.SetKind(kind)
	_ = snaps.Cleanup()
	idx, err := cache.OpenIndex(filepath.Join(root, "cache"))
	if err != nil {
		return err
	}
	opts.Store, opts.Snapshots, opts.Cache = st, snaps, idx
	return nil
}

// readDockerfile reads -f (default CONTEXT/Dockerfile, else
// CONTEXT/Containerfile as podman and buildah; "-" is stdin) and returns
// its content and the name errors use.
func readDockerfile(file, contextDir string) ([]byte, string, error) {
	if file == "-" {
		b, err := io.ReadAll(os.Stdin)
		return b, "Dockerfile", err
	}
	if file == "" {
		file = filepath.Join(contextDir, "Dockerfile")
		if _, err := os.Lstat(file); errors.Is(err, fs.ErrNotExist) {
			if _, err := os.Lstat(filepath.Join(contextDir, "Containerfile")); err == nil {
				file = filepath.Join(contextDir, "Containerfile")
			}
		}
	}
	// A FIFO (or any non-regular file) is an error, never a wait for a writer.
	b, err := regular.ReadFile(file, "Dockerfile")
	if err != nil {
		return nil, "", fmt.Errorf("read Dockerfile: %w", err)
	}
	return b, filepath.Base(file), nil
}

// sourceDateEpoch reads SOURCE_DATE_EPOCH, the reproducible-builds clock.
func sourceDateEpoch() (*time.Time, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return nil, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("SOURCE_DATE_EPOCH=%q: not a number of seconds", v)
	}
	t := time.Unix(n, 0).UTC()
	return &t, nil
}

// keyValues parses repeated K=V flags (--label); "K" alone is K="".
func keyValues(list []string, flag string) (map[string]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, kv := range list {
		k, v, _ := strings.Cut(kv, "=") // as docker
		if k == "" {
			return nil, fmt.Errorf("%s %q: want KEY=VALUE", flag, kv)
		}
		m[k] = v
	}
	return m, nil
}

// isTerminal reports whether f is a terminal, for --progress=auto.
func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }
