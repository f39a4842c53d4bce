package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/minibuild/minibuild/executor"
	"github.com/minibuild/minibuild/gc"
	"github.com/minibuild/minibuild/internal/diskspace"
)

// envMinFreeSpace sets --min-free-space when the flag is not given.
const envMinFreeSpace = "MINIBUILD_MIN_FREE_SPACE"

// addDiskFlags registers --min-free-space, the free space extraction
// keeps under --root.
func addDiskFlags(cmd *cobra.Command, g *globalOptions) {
	cmd.PersistentFlags().StringVar(&g.minFreeSpace, "min-free-space", "",
		"fail a layer extraction or ADD archive expansion that would leave less free space under --root (1GB, 5%, off); env "+
			envMinFreeSpace+"; default 1GiB or 5% of the disk, whichever is smaller")
}

// minFreeSpace is the reserve in bytes: the flag, else the environment,
// else diskspace.Default; "off" and "0" disable the guard.
func minFreeSpace(root, flag string) (int64, error) {
	v := flag
	if v == "" {
		v = os.Getenv(envMinFreeSpace)
	}
	switch v {
	case "":
		return diskspace.Default(root), nil
	case "off", "0":
		return 0, nil
	}
	if pct, ok := strings.CutSuffix(v, "%"); ok {
		n, err := strconv.ParseFloat(pct, 64)
		if err != nil || n <= 0 || n >= 100 {
			return 0, fmt.Errorf("--min-free-space %q: want a size (1GB) or a percentage of the disk (5%%)", v)
		}
		return diskspace.Percent(root, n)
	}
	n, err := gc.ParseSize(v)
	if err != nil {
		return 0, fmt.Errorf("--min-free-space: %w", err)
	}
	return n, nil
}

// applyDiskFlags gives the build and its snapshotter the reserve; call it
// after openStores.
func applyDiskFlags(g *globalOptions, opts *executor.Options) error {
	n, err := minFreeSpace(g.root, g.minFreeSpace)
	if err != nil {
		return err
	}
	opts.MinFreeSpace = n
	opts.Snapshots.SetMinFreeSpace(n)
	return nil
}
