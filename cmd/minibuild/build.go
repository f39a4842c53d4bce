package main

import (
	"context"
	"fmt"
	"io"
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
	// RUN sandbox: --secret, --network, --snapshotter
	secrets     []string
	network     string
	snapshotter string
}

func addBuildFlags(cmd *cobra.Command, b *buildOptions) {
	f := cmd.Flags()
	f.StringArrayVarP(&b.tags, "tag", "t", nil, "name and optionally a tag (name:tag); repeatable")
	f.StringVarP(&b.file, "file", "f", "", "path to the Dockerfile (default CONTEXT/Dockerfile; - reads standard input)")
	f.StringArrayVar(&b.buildArgs, "build-arg", nil, "build-time variable K=V, or K to take it from the environment")
	f.StringVar(&b.target, "target", "", "stage to build (default the last)")
	f.BoolVar(&b.noCache, "no-cache", false, "do not use the cache")
	f.BoolVar(&b.pull, "pull", false, "always pull the base images")
	f.StringArrayVar(&b.labels, "label", nil, "set an image label K=V; repeatable")
	f.StringVar(&b.progress, "progress", "auto", "progress output: auto, plain, tty, json or quiet")
	f.BoolVarP(&b.quiet, "quiet", "q", false, "print only the image id")
	f.StringVar(&b.iidfile, "iidfile", "", "write the image id to this file")
	f.StringVar(&b.platform, "platform", "", "target platform (only linux/amd64)")
	f.StringArrayVarP(&b.outputs, "output", "o", nil, "output: type=oci|docker,dest=FILE.tar, type=local,dest=DIR or type=registry[,name=REF]")
	f.StringArrayVar(&b.insecure, "insecure-registry", nil, "registry host reached over plain http")
	f.IntVar(&b.jobs, "jobs", 0, "how many stages may build at once (default: the number of CPUs)")
	addRemoteFlags(cmd, &b.remote)
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
	f.StringArrayVar(&r.cacheTo, "cache-to", nil, "export cache: type=registry,ref=REF[,mode=min|max] | type=local,dest=DIR[,mode=…] | type=inline")
}

func newBuildCommand(g *globalOptions) *cobra.Command {
	b := &buildOptions{global: g}
	cmd := &cobra.Command{
		Use:   "build [flags] CONTEXT",
		Short: "Build an image from a Dockerfile",
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

// run checks every flag, opens the store and builds under the export plan.
func (b *buildOptions) run(ctx context.Context, contextDir string, prog progress) (*executor.Result, error) {
	if b.platform != "" && b.platform != "linux/amd64" {
		return nil, fmt.Errorf("--platform %s: only linux/amd64 is supported", b.platform)
	}
	blobs, err := newBlobProgress(b.progressMode(), os.Stderr)
	if err != nil {
		return nil, err
	}
	plan, err := export.NewPlan(export.Request{
		Tags:      b.tags,
		Outputs:   b.outputs,
		Push:      b.remote.push,
		CacheFrom: b.remote.cacheFrom,
		CacheTo:   b.remote.cacheTo,
		IIDFile:   b.iidfile,
		Registry:  export.Registry{Insecure: b.insecure, Progress: blobs.event},
	})
	if err != nil {
		return nil, err
	}
	opts, err := b.executorOptions(contextDir)
	if err != nil {
		return nil, err
	}
	opts.Progress = prog.Event
	if err := openStores(b.global.root, b.snapshotter, &opts); err != nil {
		return nil, err
	}
	return export.Build(ctx, opts, plan)
}

// executorOptions turns the build's input flags into executor.Options,
// without the stores (openStores) and progress.
func (b *buildOptions) executorOptions(contextDir string) (executor.Options, error) {
	var opts executor.Options
	if fi, err := os.Stat(contextDir); err != nil || !fi.IsDir() {
		return opts, fmt.Errorf("context %s: not a directory", contextDir)
	}
	if abs, err := filepath.Abs(contextDir); err == nil {
		contextDir = abs
	}
	dockerfile, dfName, err := readDockerfile(b.file, contextDir)
	if err != nil {
		return opts, err
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
		},
		Policy: executor.Policy{
			NoCache:  b.noCache,
			Pull:     b.pull,
			Epoch:    epoch,
			Insecure: b.insecure,
			Network:  b.network,
			Jobs:     b.jobs,
		},
	}, nil
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

// readDockerfile reads -f (default CONTEXT/Dockerfile, "-" is stdin) and
// returns its content and the name errors use.
func readDockerfile(file, contextDir string) ([]byte, string, error) {
	if file == "-" {
		b, err := io.ReadAll(os.Stdin)
		return b, "Dockerfile", err
	}
	if file == "" {
		file = filepath.Join(contextDir, "Dockerfile")
	}
	b, err := os.ReadFile(file)
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
