package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version and commit are set by the Makefile's build target
// (-ldflags "-X main.version=… -X main.commit=…"); a plain `go build`
// leaves them empty: the module version (or "devel") and the build info's
// vcs.revision are shown instead.
var version, commit string

// versionInfo is what `minibuild version` and --version print.
type versionInfo struct {
	Version, Commit, GoVersion string
	Modified                   bool
}

// readVersion fills versionInfo from the -X variable and the binary's
// build info (vcs.revision, vcs.modified when built inside a git checkout).
func readVersion(read func() (*debug.BuildInfo, bool)) versionInfo {
	v := versionInfo{Version: version, Commit: commit, GoVersion: runtime.Version()}
	if v.Commit == "" {
		v.Commit = "unknown"
	}
	bi, ok := read()
	if !ok {
		if v.Version == "" {
			v.Version = "devel"
		}
		return v
	}
	v.GoVersion = bi.GoVersion
	if v.Version == "" {
		v.Version = bi.Main.Version
	}
	if v.Version == "" || v.Version == "(devel)" {
		v.Version = "devel"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

func (v versionInfo) String() string {
	commit := v.Commit
	if v.Modified {
		commit += " (modified)"
	}
	return fmt.Sprintf("minibuild %s\ncommit: %s\ngo: %s\n", v.Version, commit, v.GoVersion)
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print minibuild's version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprint(cmd.OutOrStdout(), readVersion(debug.ReadBuildInfo))
			return nil
		},
	}
}
