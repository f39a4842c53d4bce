package cache

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// referenceTree is the tree encoding written plainly (one field at a time,
// digests as strings): TreeHasher must match it byte for byte.
func referenceTree(es []TreeEntry) digest.Digest {
	h := sha256.New()
	field := func(s string) {
		h.Write(binary.AppendUvarint(nil, uint64(len(s))))
		io.WriteString(h, s)
	}
	for _, e := range es {
		field(e.Path)
		field(string(rune(e.Type)))
		field(strconv.FormatInt(e.Mode, 8))
		field(strconv.Itoa(e.UID))
		field(strconv.Itoa(e.GID))
		field(string(e.Sum))
		field(e.Link)
	}
	field(strconv.Itoa(len(es)))
	return digest.NewDigest(digest.SHA256, h)
}

func TestTreeEncoding(t *testing.T) {
	var es []TreeEntry
	raws := map[int]*[sha256.Size]byte{}
	for i := range 3000 { // past one flush of the buffer
		e := TreeEntry{Path: fmt.Sprintf("app/d%d/f%d", i%7, i), Type: tar.TypeReg, Mode: int64(i % 0o7777), UID: i, GID: -i}
		switch i % 6 {
		case 0:
			sum := sha256.Sum256([]byte(e.Path))
			raws[i] = &sum
			e.Sum = digest.Digest("sha256:" + hex.EncodeToString(sum[:]))
		case 1:
			e.Sum = digest.FromString(e.Path)
		case 2:
			e.Type, e.Link = tar.TypeSymlink, strings.Repeat("x/", i%300)
		case 3:
			e.Type, e.Link = tar.TypeLink, "app/d0/f0"
		case 4:
			e.Type = tar.TypeDir
		case 5:
			e.Type = 0xe9 // not ASCII: written as its UTF-8 string
		}
		es = append(es, e)
	}
	for _, n := range []int{0, 1, 5, len(es)} {
		h := NewTreeHasher()
		for i := range es[:n] {
			e := es[i]
			if raw := raws[i]; raw != nil {
				e.Sum = "" // AddSHA256 must not read it
				h.AddSHA256(&e, raw)
			} else {
				h.Add(&e)
			}
		}
		if got, want := h.Digest(), referenceTree(es[:n]); got != want {
			t.Errorf("%d entries: digest %s, reference %s", n, got, want)
		}
	}
}

func TestTreeFieldsCount(t *testing.T) {
	base := TreeEntry{Path: "a", Type: tar.TypeReg, Mode: 0o644, Sum: digest.FromString("x")}
	digestOf := func(es ...TreeEntry) digest.Digest {
		h := NewTreeHasher()
		for i := range es {
			h.Add(&es[i])
		}
		return h.Digest()
	}
	ref := digestOf(base)
	for name, change := range map[string]func(*TreeEntry){
		"path": func(e *TreeEntry) { e.Path = "b" },
		"type": func(e *TreeEntry) { e.Type = tar.TypeDir },
		"mode": func(e *TreeEntry) { e.Mode = 0o755 },
		"uid":  func(e *TreeEntry) { e.UID = 1 },
		"gid":  func(e *TreeEntry) { e.GID = 1 },
		"sum":  func(e *TreeEntry) { e.Sum = digest.FromString("y") },
		"link": func(e *TreeEntry) { e.Link = "t" },
	} {
		e := base
		change(&e)
		if digestOf(e) == ref {
			t.Errorf("changing %s keeps the digest", name)
		}
	}
	if digestOf(base, base) == ref || digestOf() == ref {
		t.Error("the entry count does not count")
	}
}
