package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"strconv"
	"unicode/utf8"

	"github.com/opencontainers/go-digest"
)

// TreeEntry is one entry of a file tree as a step sees it: a file a COPY
// lands, or one a RUN --mount=type=bind shows. These fields are exactly
// what DESIGN.md invariant 1 lets a key depend on; never an mtime, a size
// the filesystem chose (a directory's) or a host path.
type TreeEntry struct {
	Path     string        // slash-separated, relative to the tree's root
	Type     byte          // a tar typeflag (tar.TypeReg, tar.TypeDir, …)
	Mode     int64         // permission and special bits, as in a tar header
	UID, GID int           // owner as it lands
	Sum      digest.Digest // content digest of a regular file; "" for none
	Link     string        // symlink or hard-link target
}

// TreeHasher digests a sequence of TreeEntry: the one tree encoding, used
// for COPY/ADD sources and bind-mount trees alike. Each field is written
// as a uvarint length and its bytes (numbers in decimal, the mode in
// octal), the entry count last, batched through one buffer so that a tree
// of many small entries costs few hash calls.
//
// The encoding carries no version of its own: a tree digest only ever
// enters a step key, and keyVersion (key.go) versions that key, so a change
// here must bump keyVersion.
type TreeHasher struct {
	h   hash.Hash
	buf []byte
	n   int64
}

// treeFlush is how full the buffer may grow before it is hashed.
const treeFlush = 32 << 10

// NewTreeHasher starts an empty tree.
func NewTreeHasher() *TreeHasher {
	return &TreeHasher{h: sha256.New(), buf: make([]byte, 0, treeFlush+4<<10)}
}

// Add appends e, in the order the caller fixes (the order the entries land).
func (t *TreeHasher) Add(e *TreeEntry) { t.add(e, nil) }

// AddSHA256 appends e with sum, a raw sha256, as its content digest (e.Sum
// is not read): the same bytes as Add with Sum "sha256:<hex of sum>", with
// no string made per file.
func (t *TreeHasher) AddSHA256(e *TreeEntry, sum *[sha256.Size]byte) { t.add(e, sum) }

func (t *TreeHasher) add(e *TreeEntry, raw *[sha256.Size]byte) {
	var num [24]byte
	buf := appendField(t.buf, e.Path)
	if e.Type < utf8.RuneSelf {
		buf = append(buf, 1, e.Type) // appendField(string(rune(e.Type))) without the string
	} else {
		buf = appendField(buf, string(rune(e.Type)))
	}
	buf = appendBytesField(buf, strconv.AppendInt(num[:0], e.Mode, 8))
	buf = appendBytesField(buf, strconv.AppendInt(num[:0], int64(e.UID), 10))
	buf = appendBytesField(buf, strconv.AppendInt(num[:0], int64(e.GID), 10))
	if raw != nil {
		buf = append(buf, byte(len(sha256Prefix)+hex.EncodedLen(sha256.Size)))
		buf = append(buf, sha256Prefix...)
		buf = hex.AppendEncode(buf, raw[:])
	} else {
		buf = appendField(buf, string(e.Sum))
	}
	buf = appendField(buf, e.Link)
	if len(buf) >= treeFlush {
		t.h.Write(buf)
		buf = buf[:0]
	}
	t.buf = buf
	t.n++
}

// Digest ends the tree (it writes the entry count) and returns its digest.
// The hasher must not be used afterwards.
func (t *TreeHasher) Digest() digest.Digest {
	var num [24]byte
	t.buf = appendBytesField(t.buf, strconv.AppendInt(num[:0], t.n, 10))
	t.h.Write(t.buf)
	t.buf = nil
	return digest.NewDigest(digest.SHA256, t.h)
}

// sha256Prefix starts a sha256 digest's string form.
const sha256Prefix = "sha256:"

func appendField(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

func appendBytesField(buf, b []byte) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(b)))
	return append(buf, b...)
}
