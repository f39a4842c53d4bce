package main

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// treeDigest hashes every path, mode, mtime and content under root.
func treeDigest(t *testing.T, root string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.Walk(root, func(path string, fi fs.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		fmt.Fprintf(h, "%s %v %d\n", rel, fi.Mode(), fi.ModTime().Unix())
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			h.Write(data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestContextsDeterministic: two generations give identical trees, every
// mtime is the fixed one, and a second generation into the same place is
// refused rather than mixed with the first.
func TestContextsDeterministic(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, s := range []string{"s1", "s3", "s4"} {
		if err := generate(a, s); err != nil {
			t.Fatal(err)
		}
		if err := generate(b, s); err != nil {
			t.Fatal(err)
		}
		if da, db := treeDigest(t, filepath.Join(a, s)), treeDigest(t, filepath.Join(b, s)); da != db {
			t.Errorf("%s: two generations differ: %s vs %s", s, da, db)
		}
		fi, err := os.Stat(filepath.Join(a, s, "Dockerfile"))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.ModTime().Equal(fixedMtime) {
			t.Errorf("%s/Dockerfile mtime %v, want %v", s, fi.ModTime(), fixedMtime)
		}
	}
	if err := generate(a, "s1"); err == nil {
		t.Error("generating s1 over an existing s1 succeeded")
	}
	if err := generate(a, "s9"); err == nil {
		t.Error("an unknown scenario was accepted")
	}
}

// TestRNGStable pins the generator's output: a change here changes every
// generated context, and with it every figure measured over them.
func TestRNGStable(t *testing.T) {
	for _, c := range []struct {
		r    *rng
		want [3]uint64
	}{
		// splitmix64's published test vector (seed 1234567).
		{&rng{state: 1234567}, [3]uint64{6457827717110365317, 3203168211198807973, 9817491932198370423}},
		{newRNG("bench-s2"), [3]uint64{16154407437264760923, 9579231497746672749, 11155501250350668338}},
	} {
		if got := [3]uint64{c.r.uint64(), c.r.uint64(), c.r.uint64()}; got != c.want {
			t.Errorf("got %v, want %v", got, c.want)
		}
	}
}
