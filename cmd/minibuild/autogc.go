package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/minibuild/minibuild/gc"
)

// addGCFlags registers --gc-keep-storage, the cap automatic collection
// keeps the store under after a build.
func addGCFlags(cmd *cobra.Command, g *globalOptions) {
	cmd.PersistentFlags().StringVar(&g.gcKeepStorage, "gc-keep-storage", "",
		"after a build, collect least recently used cache until the store fits in this size (5GB, 10%, off); env "+
			gc.EnvKeepStorage+"; default 10% of the disk, at most 20GB")
}

// autoGC runs the automatic collection after a successful build and
// returns the line the build summary prints ("" when it did not run).
func autoGC(g *globalOptions) (string, error) {
	limit, err := gc.Cap(g.root, g.gcKeepStorage)
	if err != nil {
		return "", err
	}
	f, ran, err := gc.Auto(g.root, limit)
	if err != nil || !ran {
		return "", err
	}
	return fmt.Sprintf("gc: store over %s, freed %s (%d blobs, %d cache records, %d extracted layers)",
		humanSize(limit), humanSize(f.Total()), f.Blobs, f.Records, f.Layers), nil
}
