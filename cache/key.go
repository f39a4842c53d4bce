// Package cache derives instruction cache keys and keeps the local index of
// what each key produced (DESIGN.md invariants 1, 2 and 4).
//
// This file is the one recipe of a key: Inputs names every input a step's
// key covers, and nothing else enters it. It never sees mtimes, absolute
// paths, hostnames or the time, so the same Dockerfile and context give the
// same keys on every host. The encoding is versioned: bumping keyVersion
// invalidates every key cleanly.
package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"strings"

	"github.com/opencontainers/go-digest"
)

// keyVersion names the key encoding, the tree encoding of file inputs
// included; change it whenever an encoding or the meaning of a record
// changes.
const keyVersion = "minibuild-cache-key/v4"

// Inputs is everything a step's key is made of. Reading this type tells
// exactly what invalidates a step; the same values explain a miss (Names).
type Inputs struct {
	// Parent is the previous step's key: a step is only reused after the
	// very same chain.
	Parent digest.Digest
	// Instruction is the canonical text after variable expansion
	// (parser.Canonical): quoting and line breaks do not matter, values
	// do. WORKDIR puts its resolved absolute path here; an ONBUILD trigger
	// its own instruction.
	Instruction string
	// BuildArgs are the ARGs a RUN can see, in scope order: "K=V" when K is
	// set (even to ""), "K" alone when declared but unset — a command can
	// tell those apart. Other instructions see build args only through
	// their expanded text.
	BuildArgs []string
	// Network is a RUN's network mode: a step run without a network may
	// well have produced something else. Hosts are the --add-host entries
	// its /etc/hosts gains (BuildKit keys an exec on its extra hosts too).
	Network string
	Hosts   []string
	// Files is the tree digest of exactly what a COPY or ADD lands: path,
	// type, mode, owner, content and link target of each entry.
	Files digest.Digest
	// Mounts are the RUN bind mounts whose content the step reads, in
	// flag order. Cache mounts, tmpfs and secrets never enter a key.
	Mounts []MountInput

	// Why explains a miss in words; it never enters the key.
	Why Why
}

// Why is what explains a miss beyond the key's own inputs.
type Why struct {
	// FileNames names the files a COPY or ADD lands, each with a digest of
	// how it lands; computed only when a miss is explained.
	FileNames func() map[string]string
	// Vars are the variables the instruction's text refers to, with their
	// values: "build arg VERSION" → "1.1", "ENV APP" → "prod".
	Vars map[string]string
	// Base is the stage's base as resolved: "busybox@sha256:…", "scratch",
	// "stage builder".
	Base string
	// Display is the instruction as the user wrote it.
	Display string
}

// MountInput is one bind mount of a RUN: its target and the tree digest
// (TreeHasher) of its source.
type MountInput struct {
	Target string
	Tree   digest.Digest
}

// FromKey is the key of a stage's FROM step: the base image's id (its
// config digest, which covers its layers' diff_ids, so the same content
// keys the same however it was packaged or compressed), or "scratch".
func FromKey(base string) digest.Digest {
	return (&Inputs{Instruction: "FROM " + base}).Key()
}

// Key returns the step's cache key: a sha256 over a versioned encoding in
// which every field is length-prefixed and tagged, so that two different
// Inputs never encode alike.
func (in *Inputs) Key() digest.Digest {
	h := sha256.New()
	in.encode(h)
	return digest.NewDigest(digest.SHA256, h)
}

// encode writes the key's encoding (what Key hashes) to h.
func (in *Inputs) encode(h hash.Hash) {
	writeField(h, keyVersion)
	writeField(h, string(in.Parent))
	writeField(h, in.Instruction)
	if in.BuildArgs != nil {
		writeField(h, "args")
		writeList(h, in.BuildArgs)
	}
	if in.Network != "" {
		writeField(h, "network")
		writeField(h, in.Network)
	}
	if len(in.Hosts) > 0 {
		writeField(h, "hosts")
		writeList(h, in.Hosts)
	}
	if in.Files != "" {
		writeField(h, "files")
		writeField(h, string(in.Files))
	}
	for _, m := range in.Mounts {
		writeField(h, "mount")
		writeField(h, m.Target)
		writeField(h, string(m.Tree))
	}
}

// Names lists the inputs beyond parent and instruction by what a person
// would call them ("build arg VERSION", "network", "mount /src", a file
// path), each with a value that changes when the input does: a build
// arg's or the network's value as it is (docker keeps build args in the
// image history too; secrets are --secret's, never build args), a digest
// for content.
func (in *Inputs) Names() map[string]string {
	m := map[string]string{}
	if in.Why.FileNames != nil {
		for k, v := range in.Why.FileNames() {
			m[k] = v
		}
	}
	for _, kv := range in.BuildArgs {
		k, v, set := strings.Cut(kv, "=")
		if !set {
			v = "(unset)"
		}
		m["build arg "+k] = v
	}
	if in.Network != "" {
		m["network"] = in.Network
	}
	if len(in.Hosts) > 0 {
		m["add-host"] = strings.Join(in.Hosts, ",")
	}
	for _, mi := range in.Mounts {
		m["mount "+mi.Target] = mi.Tree.String()
	}
	return m
}

// writeField length-prefixes each field so that no two different field
// lists encode to the same bytes.
func writeField(h hash.Hash, s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
}

// writeList writes a counted list of fields.
func writeList(h hash.Hash, values []string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(values)))
	h.Write(n[:])
	for _, v := range values {
		writeField(h, v)
	}
}
