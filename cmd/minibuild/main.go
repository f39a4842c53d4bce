// Command minibuild builds OCI images from Dockerfiles without a daemon,
// re-executing only from the first instruction whose cache key changed.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"time"

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
	cmd, err := newRootCommand().ExecuteContextC(ctx)
	stop()
	pprof.StopCPUProfile()
	if err != nil {
		reportError(os.Stderr, cmd, os.Args[1:], err)
		if errors.Is(err, context.Canceled) {
			os.Exit(130)
		}
		os.Exit(1)
	}
}

// reportError prints the error a command ends with: an "error:" line, or,
// when the command's progress is json, an {"event":"error"} line, so that
// stderr holds only JSON.
func reportError(w io.Writer, cmd *cobra.Command, args []string, err error) {
	if progressIsJSON(cmd, args) {
		writeJSONError(w, err, time.Now())
		return
	}
	fmt.Fprintln(w, "error:", err)
}

// progressIsJSON tells whether the command ran with --progress=json. A
// flag error can stop parsing before --progress is read, so the arguments
// are looked at too.
func progressIsJSON(cmd *cobra.Command, args []string) bool {
	if cmd != nil {
		if f := cmd.Flags().Lookup("progress"); f != nil && f.Changed {
			return f.Value.String() == "json"
		}
	}
	for i, a := range args {
		if a == "--progress=json" || a == "--progress" && i+1 < len(args) && args[i+1] == "json" {
			return true
		}
	}
	return false
}

// globalOptions are the flags every command shares.
type globalOptions struct {
	root          string
	gcKeepStorage string // --gc-keep-storage (autogc.go)
	minFreeSpace  string // --min-free-space (diskflags.go)
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
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				if err := unknownCommand(cmd, args[0]); err != nil {
					return err
				}
			}
			return cobra.MaximumNArgs(1)(cmd, args)
		},
		Version:                    readVersion(debug.ReadBuildInfo).String(),
		SuggestionsMinimumDistance: suggestionDistance,
		SilenceUsage:               true,
		SilenceErrors:              true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			return runBuild(cmd.Context(), b, args[0])
		},
	}
	root.SetVersionTemplate("{{.Version}}")
	root.SetFlagErrorFunc(flagError)
	root.PersistentFlags().StringVar(&g.root, "root", defaultRoot(), "directory holding everything minibuild keeps (env MINIBUILD_ROOT)")
	addBuildFlags(root, b)
	addGCFlags(root, g)
	addDiskFlags(root, g)
	root.AddCommand(newBuildCommand(g), newImagesCommand(g), newInspectCommand(g), newHistoryCommand(g),
		newTagCommand(g), newRmiCommand(g), newSaveCommand(g), newLoadCommand(g),
		newPushCommand(g), newPullCommand(g), newLoginCommand(), newLogoutCommand(), newPruneCommand(g), newVersionCommand(),
		newDfCommand(g), newExplainCommand(g))
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
