// Command benchtool is the side-by-side benchmark's helper (bench/side.sh):
//
//	benchtool contexts OUTDIR [s1 s2 s3 s4]   generate the scenario contexts
//	benchtool port                            print a free loopback TCP port
//
// The contexts have the shapes of the team's shared harness, generated here so
// that the repository depends on nothing outside it: S1 a python-like app
// whose deps RUN takes about a second and writes 23 MB, S2 20,000 files of
// 200 MB under `COPY . /src` plus one RUN, S3 a multi-stage build with two
// independent builder stages, S4 thirty RUN steps. Every byte and every mtime
// is fixed (a seeded generator of our own, mtime 2024-01-01), so two runs on
// any machine produce identical trees.
package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// fixedMtime is every generated file's and directory's mtime.
var fixedMtime = time.Unix(1704067200, 0)

// scenarios maps a scenario's name to its generator.
var scenarios = map[string]func(dir string, r *rng) error{
	"s1": genS1,
	"s2": genS2,
	"s3": genS3,
	"s4": genS4,
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "benchtool:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: benchtool contexts OUTDIR [s1 s2 s3 s4] | port")
	}
	switch args[0] {
	case "port":
		return freePort()
	case "contexts":
		if len(args) < 2 {
			return fmt.Errorf("usage: benchtool contexts OUTDIR [s1 s2 s3 s4]")
		}
		names := args[2:]
		if len(names) == 0 {
			names = []string{"s1", "s2", "s3", "s4"}
		}
		for _, name := range names {
			if err := generate(args[1], name); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unknown command %q (contexts or port)", args[0])
}

// generate writes scenario name under out/name, which must not exist yet.
func generate(out, name string) error {
	gen, ok := scenarios[name]
	if !ok {
		return fmt.Errorf("unknown scenario %q (s1, s2, s3 or s4)", name)
	}
	dir := filepath.Join(out, name)
	if _, err := os.Lstat(dir); err == nil {
		return fmt.Errorf("%s exists; remove it first", dir)
	}
	if err := gen(dir, newRNG("bench-"+name)); err != nil {
		return fmt.Errorf("generate %s: %w", name, err)
	}
	return fixMtimes(dir)
}

// freePort prints a loopback port that was free a moment ago (the caller
// retries with another one if a race takes it).
func freePort() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println(l.Addr().(*net.TCPAddr).Port)
	return nil
}

// write creates path (and its parent directories) holding data, mode 0644.
func write(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return err
	}
	return os.Chmod(path, 0o644) // whatever the umask
}

// fixMtimes sets every mtime under root, root included, to fixedMtime. The
// walk is lexical, parents before children, so a directory's time is set
// before its entries: setting a file's time does not change its directory's.
func fixMtimes(root string) error {
	return filepath.Walk(root, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(path, fixedMtime, fixedMtime)
	})
}
