// Package cache derives instruction cache keys and keeps the local index of
// what each key produced (DESIGN.md invariants 1, 2 and 4).
//
// A key is a pure function of the parent key, the expanded instruction and
// the digests of the inputs the instruction reads. It never sees mtimes,
// absolute paths, hostnames or the time, so the same Dockerfile and context
// give the same keys on every host. The encoding is versioned: bumping
// keyVersion invalidates every key cleanly.
package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"

	"github.com/opencontainers/go-digest"
)

// keyVersion names the key encoding; change it whenever the encoding or the
// meaning of a record changes.
const keyVersion = "minibuild-cache-key/v2"

// Key returns the cache key of an instruction from its parent's key, its
// canonical expanded text and the digests of the inputs it reads (file
// content, visible build args, …), in a fixed order chosen by the caller.
func Key(parent digest.Digest, instruction string, inputs ...digest.Digest) digest.Digest {
	h := sha256.New()
	writeField(h, keyVersion)
	writeField(h, string(parent))
	writeField(h, instruction)
	for _, in := range inputs {
		writeField(h, string(in))
	}
	return digest.NewDigest(digest.SHA256, h)
}

// BaseKey is the key of a stage's FROM step: the base image's manifest
// digest, or "scratch".
func BaseKey(base string) digest.Digest {
	return Key("", "FROM", digest.FromString(base))
}

// writeField length-prefixes each field so that no two different field
// lists encode to the same bytes.
func writeField(h hash.Hash, s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
}

// StringsDigest digests a list of strings unambiguously, e.g. the sorted
// build args an instruction can see.
func StringsDigest(values []string) digest.Digest {
	h := sha256.New()
	writeField(h, "strings")
	for _, v := range values {
		writeField(h, v)
	}
	return digest.NewDigest(digest.SHA256, h)
}
