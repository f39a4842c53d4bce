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

	"github.com/minibuild/minibuild/archive"
	"github.com/minibuild/minibuild/cache"
	"github.com/minibuild/minibuild/executor"
	"github.com/minibuild/minibuild/output"
	"github.com/minibuild/minibuild/parser"
	"github.com/minibuild/minibuild/registry"
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

func runBuild(ctx context.Context, b *buildOptions, contextDir string) error {
	start := time.Now()
	if b.platform != "" && b.platform != "linux/amd64" {
		return fmt.Errorf("--platform %s: only linux/amd64 is supported", b.platform)
	}
	outs, err := output.ParseAll(b.outputs)
	if err != nil {
		return err
	}
	if (b.remote.push || hasRegistryOutput(outs)) && len(pushTargets(b.remote.push, b.tags, outs)) == 0 {
		return fmt.Errorf("nothing to push to: give a -t NAME:TAG or -o type=registry,name=REF")
	}
	if fi, err := os.Stat(contextDir); err != nil || !fi.IsDir() {
		return fmt.Errorf("context %s: not a directory", contextDir)
	}
	if abs, err := filepath.Abs(contextDir); err == nil {
		contextDir = abs
	}
	dockerfile, dfName, err := readDockerfile(b.file, contextDir)
	if err != nil {
		return err
	}
	buildArgs, err := parser.ParseBuildArgs(b.buildArgs, os.LookupEnv)
	if err != nil {
		return err
	}
	labels, err := keyValues(b.labels, "--label")
	if err != nil {
		return err
	}
	epoch, err := sourceDateEpoch()
	if err != nil {
		return err
	}
	for _, t := range b.tags {
		if _, err := store.NormalizeTag(t); err != nil {
			return err
		}
	}
	cacheFrom, cacheTo, err := b.remote.parsed(b.tags, outs)
	if err != nil {
		return err
	}

	mode := b.progress
	if b.quiet {
		mode = "quiet"
	}
	prog, err := newProgress(mode, os.Stderr)
	if err != nil {
		return err
	}

	st, err := store.Open(b.global.root)
	if err != nil {
		return err
	}
	snaps, err := snapshot.New(b.global.root, st)
	if err != nil {
		return err
	}
	kind, err := snapshot.ParseKind(b.snapshotter)
	if err != nil {
		return err
	}
	snaps.SetKind(kind)
	secrets, err := executor.LoadSecrets(b.secrets, os.LookupEnv)
	if err != nil {
		return err
	}
	_ = snaps.Cleanup()
	idx, err := cache.OpenIndex(filepath.Join(b.global.root, "cache"))
	if err != nil {
		return err
	}

	res, err := executor.Build(ctx, executor.Options{
		Services: executor.Services{
			Store:     st,
			Snapshots: snaps,
			Cache:     idx,
			StateDir:  filepath.Join(b.global.root, "buildctx"),
			Progress:  prog.Event,
			CacheFrom: importCaches(ctx, st, cacheFrom, registry.Options{Insecure: b.insecure}, func(w string) {
				prog.Event(executor.Event{Kind: executor.KindWarning, Line: w})
			}),
		},
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
	})
	if err != nil {
		prog.Close()
		return err
	}
	blobs, _ := newBlobProgress(mode, os.Stderr)
	if err := finishRemote(ctx, st, idx, res, pushTargets(b.remote.push, b.tags, outs), cacheTo,
		registry.Options{Insecure: b.insecure, Progress: blobs.event}); err != nil {
		prog.Close()
		return err
	}
	for _, t := range b.tags {
		if err := st.Tag(t, res.Digest); err != nil {
			prog.Close()
			return err
		}
	}
	for _, o := range outs {
		if err := o.Write(ctx, []archive.Named{{Image: res.Image, Tags: b.tags}}); err != nil {
			prog.Close()
			return err
		}
	}
	if b.iidfile != "" {
		if err := os.WriteFile(b.iidfile, []byte(res.ID.String()), 0o644); err != nil {
			prog.Close()
			return err
		}
	}
	prog.Result(res, b.tags, time.Since(start))
	prog.Close()
	if mode == "quiet" {
		fmt.Println(res.ID.String())
	}
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

func keyValues(list []string, flag string) (map[string]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, kv := range list {
		k, v, _ := strings.Cut(kv, "=") // "K" alone is K="", as docker
		if k == "" {
			return nil, fmt.Errorf("%s %q: want KEY=VALUE", flag, kv)
		}
		m[k] = v
	}
	return m, nil
}

// isTerminal reports whether f is a terminal, for --progress=auto.
func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }
