package cache

import (
	"bytes"
	"hash"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"
)

// recorder is a hash.Hash that keeps what is written: the key encoding
// itself, so that the fuzzer checks the encoding is injective rather than
// hoping for a sha256 collision.
type recorder struct{ bytes.Buffer }

func (r *recorder) Sum(b []byte) []byte { return append(b, r.Bytes()...) }
func (r *recorder) Size() int           { return 0 }
func (r *recorder) BlockSize() int      { return 1 }

var _ hash.Hash = (*recorder)(nil)

// fuzzInputs decodes b into Inputs: fields separated by 0xff (never in
// UTF-8, so any field may hold the zero bytes of a forged length prefix):
// parent, instruction, network, files, a flags field (its first byte: bit
// 0 set = BuildArgs non-nil, bits 1-3 = how many build args follow), the
// build args, then mount target/tree pairs.
func fuzzInputs(b []byte) *Inputs {
	parts := bytes.Split(b, []byte{0xff})
	for len(parts) < 5 {
		parts = append(parts, nil)
	}
	in := &Inputs{
		Parent:      digest.Digest(parts[0]),
		Instruction: string(parts[1]),
		Network:     string(parts[2]),
		Files:       digest.Digest(parts[3]),
	}
	var flags byte
	if len(parts[4]) > 0 {
		flags = parts[4][0]
	}
	rest := parts[5:]
	if flags&1 != 0 {
		in.BuildArgs = []string{}
	}
	for n := int(flags>>1) & 7; n > 0 && len(rest) > 0; n-- {
		in.BuildArgs = append(in.BuildArgs, string(rest[0]))
		rest = rest[1:]
	}
	for ; len(rest) >= 2; rest = rest[2:] {
		in.Mounts = append(in.Mounts, MountInput{Target: string(rest[0]), Tree: digest.Digest(rest[1])})
	}
	return in
}

// sameInputs is equality of what a key means: nil and empty BuildArgs
// differ (a RUN that sees no ARG is not a COPY), nil and empty Mounts do not.
func sameInputs(a, b *Inputs) bool {
	return a.Parent == b.Parent && a.Instruction == b.Instruction && a.Network == b.Network && a.Files == b.Files &&
		(a.BuildArgs == nil) == (b.BuildArgs == nil) && slices.Equal(a.BuildArgs, b.BuildArgs) &&
		slices.Equal(a.Mounts, b.Mounts)
}

func encoding(in *Inputs) []byte {
	var r recorder
	in.encode(&r)
	return r.Bytes()
}

// FuzzKey: two different Inputs never encode alike, and so never share a
// Key; the same Inputs always do.
func FuzzKey(f *testing.F) {
	sep := string([]byte{0xff})
	for _, s := range [][2]string{
		{"p" + sep + "RUN a", "p" + sep + "RUN a" + sep + sep + sep + "\x01"},
		{sep + "RUN a" + sep + sep + sep + "\x03" + sep + "V=1", sep + "RUN a" + sep + sep + sep + "\x05" + sep + "V" + sep + "=1"},
		{sep + "COPY" + sep + sep + "sha256:aa", sep + "COPY" + sep + "sha256:aa"},
		{sep + "RUN" + sep + sep + sep + sep + "/t" + sep + "sha256:1", sep + "RUN" + sep + sep + sep + sep + "/t" + sep + "sha256:1" + sep + "/u" + sep},
		{"a\x00\x00\x00\x00\x00\x00\x00\x01b", "a" + sep + "b"},
		{sep + "RUN x" + sep + "host", sep + "RUN x" + sep + sep + sep + "\x03" + sep + "network"},
	} {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		x, y := fuzzInputs(a), fuzzInputs(b)
		same := sameInputs(x, y)
		if enc := bytes.Equal(encoding(x), encoding(y)); enc != same {
			t.Fatalf("inputs equal=%v but encodings equal=%v:\n%+v\n%+v", same, enc, x, y)
		}
		if keys := x.Key() == y.Key(); keys != same {
			t.Fatalf("inputs equal=%v but keys equal=%v:\n%+v\n%+v", same, keys, x, y)
		}
	})
}
