package parser

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// FuzzParse runs the whole front end over arbitrary bytes: Parse, then
// Expand and Canonical of every instruction. Nothing may panic; a parse
// error is an *Error within the file's lines, and Canonical is a function
// of the instruction (the same text twice).
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"FROM busybox\nRUN echo hi\n",
		"# syntax=docker/dockerfile:1\n# escape=`\nFROM scratch AS a\nCOPY --chown=1:1 a b `\n  c/\n",
		"ARG V=1\nFROM busybox:${V}\nENV A=$V B=\"x y\"\nWORKDIR /w/$A\nLABEL k=v\nEXPOSE 80/tcp ${P:-81}\n",
		"FROM busybox\nRUN --mount=type=cache,target=/c --network=none <<EOF\necho a\nEOF\n",
		"FROM busybox\nCOPY <<a.txt /a\nhello\na.txt\nADD --checksum=sha256:00 http://x/y /z\n",
		"FROM busybox\nHEALTHCHECK --interval=5s CMD true\nONBUILD RUN x\nSHELL [\"/bin/sh\",\"-c\"]\nCMD [\"a\"]\nENTRYPOINT b\n",
		"FROM a\nUSER ${U:?unset}\nSTOPSIGNAL 9\nVOLUME [\"/v\"]\nARG X\nMAINTAINER m\n",
		"FROM busybox\nRUN a \\\n\n  b\n",
		"COPY a b\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		df, err := Parse(bytes.NewReader(data), "Dockerfile")
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T) is not a *parser.Error", err, err)
			}
			if lines := bytes.Count(data, []byte("\n")) + 1; pe.Line < 0 || pe.Line > lines {
				t.Fatalf("error %q names line %d of %d", err, pe.Line, lines)
			}
			if !strings.HasPrefix(err.Error(), "Dockerfile") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		env := []string{"A=1", "V=x y", "EMPTY="}
		for _, st := range df.Stages {
			_, _ = ExpandWord(st.BaseName, env, df.Escape)
			for _, step := range st.Steps {
				before := Canonical(step.Cmd)
				ex, err := Expand(step.Cmd, env, df.Escape)
				if Canonical(step.Cmd) != before {
					t.Fatalf("Expand changed its input: %q became %q", before, Canonical(step.Cmd))
				}
				if err != nil {
					continue
				}
				if a, b := Canonical(ex), Canonical(ex); a != b {
					t.Fatalf("Canonical is not deterministic: %q, %q", a, b)
				}
			}
		}
	})
}
