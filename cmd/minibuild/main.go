// Command minibuild builds OCI images from Dockerfiles without a daemon,
// re-executing only from the first instruction whose cache key changed.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/minibuild/minibuild/sandbox"
)

func main() {
	sandbox.Main() // returns unless this process is a RUN step's init

	if path := os.Getenv("MINIBUILD_CPUPROFILE"); path != "" {
		// A developer aid for `go tool pprof`; not a user interface.
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	pprof.StopCPUProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		if errors.Is(err, context.Canceled) {
			os.Exit(130)
		}
		os.Exit(1)
	}
}

// globalOptions are the flags every command shares.
type globalOptions struct {
	root          string
	gcKeepStorage string // --gc-keep-storage (autogc.go)
}

func newRootCommand() *cobra.Command {
	g := &globalOptions{}
	b := &buildOptions{global: g}
	root := &cobra.Command{
		Use:   "minibuild [flags] CONTEXT",
		Short: "Build OCI images from Dockerfiles, re-running only what changed",
		Long: `minibuild turns a Dockerfile and a context directory into an OCI image.
Every instruction gets a cache key derived from its parent's key, the expanded
instruction and the exact content it reads; a rebuild re-executes only from the
first step whose key changed.

  minibuild -t myapp:1.1 .        (same as: minibuild build -t myapp:1.1 .)`,
		Args:          cobra.MaximumNArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			return runBuild(cmd.Context(), b, args[0])
		},
	}
	root.PersistentFlags().StringVar(&g.root, "root", defaultRoot(), "directory holding everything minibuild keeps (env MINIBUILD_ROOT)")
	addBuildFlags(root, b)
	addGCFlags(root, g)
	root.AddCommand(newBuildCommand(g), newImagesCommand(g), newInspectCommand(g), newHistoryCommand(g),
		newTagCommand(g), newRmiCommand(g), newSaveCommand(g), newLoadCommand(g),
		newPushCommand(g), newPullCommand(g), newLoginCommand(), newLogoutCommand(), newPruneCommand(g),
		newDfCommand(g))
	return root
}

// defaultRoot is $MINIBUILD_ROOT, else $XDG_DATA_HOME/minibuild, else
// ~/.local/share/minibuild.
func defaultRoot() string {
	if r := os.Getenv("MINIBUILD_ROOT"); r != "" {
		return r
	}
	if x := os.Getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "minibuild")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "minibuild")
	}
	return filepath.Join(home, ".local", "share", "minibuild")
}
