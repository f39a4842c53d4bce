package parser

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

func mustParse(t *testing.T, src string) *Dockerfile {
	t.Helper()
	df, err := Parse(strings.NewReader(src), "Dockerfile")
	if err != nil {
		t.Fatalf("Parse(%q): %v", src, err)
	}
	return df
}

// onlyStep parses "FROM busybox\n"+src and returns its single step.
func onlyStep(t *testing.T, src string) Step {
	t.Helper()
	df := mustParse(t, "FROM busybox\n"+src)
	if len(df.Stages) != 1 || len(df.Stages[0].Steps) != 1 {
		t.Fatalf("%q: want 1 stage with 1 step, got %+v", src, df.Stages)
	}
	return df.Stages[0].Steps[0]
}

func TestParseInstructions(t *testing.T) {
	str := func(s string) *string { return &s }
	tests := []struct {
		src string
		chk func(t *testing.T, c instructions.Command)
	}{
		{src: "RUN apt-get install -y  curl", chk: func(t *testing.T, c instructions.Command) {
			r := c.(*instructions.RunCommand)
			eq(t, r.CmdLine, []string{"apt-get install -y  curl"})
			eq(t, r.PrependShell, true)
		}},
		{src: `RUN ["echo", "a b"]`, chk: func(t *testing.T, c instructions.Command) {
			r := c.(*instructions.RunCommand)
			eq(t, r.CmdLine, []string{"echo", "a b"})
			eq(t, r.PrependShell, false)
		}},
		{src: "RUN --network=none --mount=type=cache,target=/root/.cache true", chk: func(t *testing.T, c instructions.Command) {
			r := c.(*instructions.RunCommand)
			eq(t, instructions.GetNetwork(r), "none")
			eq(t, slices.Sorted(slices.Values(r.FlagsUsed)), []string{"mount", "network"})
		}},
		{src: "COPY --chown=1:2 --chmod=644 --link a b /dst/", chk: func(t *testing.T, c instructions.Command) {
			r := c.(*instructions.CopyCommand)
			eq(t, r.SourcePaths, []string{"a", "b"})
			eq(t, r.DestPath, "/dst/")
			eq(t, [3]any{r.Chown, r.Chmod, r.Link}, [3]any{"1:2", "644", true})
		}},
		{src: `COPY --from=build ["/out dir", "/x"]`, chk: func(t *testing.T, c instructions.Command) {
			r := c.(*instructions.CopyCommand)
			eq(t, r.From, "build")
			eq(t, r.SourcePaths, []string{"/out dir"})
			eq(t, r.DestPath, "/x")
		}},
		{src: "ADD --checksum=sha256:abc https://example.com/f /f", chk: func(t *testing.T, c instructions.Command) {
			r := c.(*instructions.AddCommand)
			eq(t, r.SourcePaths, []string{"https://example.com/f"})
			eq(t, r.Checksum, "sha256:abc")
		}},
		{src: "WORKDIR /app", chk: func(t *testing.T, c instructions.Command) {
			eq(t, c.(*instructions.WorkdirCommand).Path, "/app")
		}},
		{src: `ENV A=1 B="two words" C=$A`, chk: func(t *testing.T, c instructions.Command) {
			eq(t, pairs(c.(*instructions.EnvCommand).Env), [][2]string{{"A", "1"}, {"B", `"two words"`}, {"C", "$A"}}) // quotes go at expansion
		}},
		{src: "ENV LEGACY value with spaces", chk: func(t *testing.T, c instructions.Command) {
			eq(t, pairs(c.(*instructions.EnvCommand).Env), [][2]string{{"LEGACY", "value with spaces"}})
		}},
		{src: "ARG A B=2 C=", chk: func(t *testing.T, c instructions.Command) {
			got := c.(*instructions.ArgCommand).Args
			want := []instructions.KeyValuePairOptional{{Key: "A"}, {Key: "B", Value: str("2")}, {Key: "C", Value: str("")}}
			eq(t, got, want)
		}},
		{src: `LABEL version="1.0" "com.x.y"=z`, chk: func(t *testing.T, c instructions.Command) {
			eq(t, pairs(c.(*instructions.LabelCommand).Labels), [][2]string{{"version", `"1.0"`}, {`"com.x.y"`, "z"}})
		}},
		{src: "EXPOSE 8080/tcp 80", chk: func(t *testing.T, c instructions.Command) {
			eq(t, c.(*instructions.ExposeCommand).Ports, []string{"80", "8080/tcp"})
		}},
		{src: "USER app:app", chk: func(t *testing.T, c instructions.Command) {
			eq(t, c.(*instructions.UserCommand).User, "app:app")
		}},
		{src: `VOLUME ["/data", "/logs"]`, chk: func(t *testing.T, c instructions.Command) {
			eq(t, c.(*instructions.VolumeCommand).Volumes, []string{"/data", "/logs"})
		}},
		{src: "VOLUME /a /b", chk: func(t *testing.T, c instructions.Command) {
			eq(t, c.(*instructions.VolumeCommand).Volumes, []string{"/a", "/b"})
		}},
		{src: `CMD ["python", "app.py"]`, chk: func(t *testing.T, c instructions.Command) {
			r := c.(*instructions.CmdCommand)
			eq(t, r.CmdLine, []string{"python", "app.py"})
			eq(t, r.PrependShell, false)
		}},
		{src: "CMD python app.py", chk: func(t *testing.T, c instructions.Command) {
			r := c.(*instructions.CmdCommand)
			eq(t, r.CmdLine, []string{"python app.py"})
			eq(t, r.PrependShell, true)
		}},
		{src: `ENTRYPOINT ["/entry.sh"]`, chk: func(t *testing.T, c instructions.Command) {
			eq(t, c.(*instructions.EntrypointCommand).CmdLine, []string{"/entry.sh"})
		}},
		{src: `SHELL ["/bin/bash", "-c"]`, chk: func(t *testing.T, c instructions.Command) {
			eq(t, c.(*instructions.ShellCommand).Shell, []string{"/bin/bash", "-c"})
		}},
		{src: "STOPSIGNAL SIGTERM", chk: func(t *testing.T, c instructions.Command) {
			eq(t, c.(*instructions.StopSignalCommand).Signal, "SIGTERM")
		}},
		{src: "HEALTHCHECK --interval=5s --retries=3 CMD curl -f http://localhost/", chk: func(t *testing.T, c instructions.Command) {
			h := c.(*instructions.HealthCheckCommand).Health
			eq(t, h.Test, []string{"CMD-SHELL", "curl -f http://localhost/"})
			eq(t, h.Interval, 5*time.Second)
			eq(t, h.Retries, 3)
		}},
		{src: "HEALTHCHECK NONE", chk: func(t *testing.T, c instructions.Command) {
			eq(t, c.(*instructions.HealthCheckCommand).Health.Test, []string{"NONE"})
		}},
		{src: "ONBUILD RUN make", chk: func(t *testing.T, c instructions.Command) {
			eq(t, c.(*instructions.OnbuildCommand).Expression, "RUN make")
		}},
		{src: "MAINTAINER Jane <jane@example.com>", chk: func(t *testing.T, c instructions.Command) {
			eq(t, c.(*instructions.MaintainerCommand).Maintainer, "Jane <jane@example.com>")
		}},
		{src: "run echo lower", chk: func(t *testing.T, c instructions.Command) {
			eq(t, c.(*instructions.RunCommand).CmdLine, []string{"echo lower"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			st := onlyStep(t, tt.src)
			if st.Line != 2 || st.EndLine != 2 {
				t.Errorf("lines = %d-%d, want 2-2", st.Line, st.EndLine)
			}
			if st.Original != tt.src {
				t.Errorf("Original = %q, want %q", st.Original, tt.src)
			}
			tt.chk(t, st.Cmd)
		})
	}
}

func eq(t *testing.T, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v, want %#v", got, want)
	}
}

func TestParseStages(t *testing.T) {
	df := mustParse(t, `# syntax=docker/dockerfile:1
ARG BASE=busybox
ARG TAG
FROM ${BASE}:${TAG:-latest} AS Build
RUN make

from --platform=$BUILDPLATFORM scratch
COPY --from=build /out /
`)
	eq(t, df.Syntax, "docker/dockerfile:1")
	eq(t, df.Escape, '\\')
	if len(df.MetaArgs) != 2 || df.MetaArgs[0].Args[0].Key != "BASE" || *df.MetaArgs[0].Args[0].Value != "busybox" {
		t.Errorf("MetaArgs = %+v", df.MetaArgs)
	}
	if len(df.Stages) != 2 {
		t.Fatalf("stages = %d", len(df.Stages))
	}
	s0, s1 := df.Stages[0], df.Stages[1]
	eq(t, [3]any{s0.Name, s0.BaseName, s0.Line}, [3]any{"build", "${BASE}:${TAG:-latest}", 4})
	eq(t, [4]any{s1.Name, s1.BaseName, s1.Platform, s1.Line}, [4]any{"", "scratch", "$BUILDPLATFORM", 7})
	eq(t, s0.Original, "FROM ${BASE}:${TAG:-latest} AS Build")
	eq(t, len(s0.Steps), 1)
	eq(t, s1.Steps[0].Line, 8)
	// Lint: an upper-case stage name is a warning.
	joined := strings.Join(df.Warnings, "\n")
	for _, w := range []string{"Dockerfile:4: StageNameCasing:"} {
		if !strings.Contains(joined, w) {
			t.Errorf("warnings %q lack %q", df.Warnings, w)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ src, want string }{
		{"", "Dockerfile: the Dockerfile cannot be empty"},
		{"  \n\n", "Dockerfile: the Dockerfile cannot be empty"},
		{"# just a comment\n", "Dockerfile:1: file with no instructions"},
		{"ARG A=1\n", "Dockerfile:1: dockerfile contains no stages to build"},
		{"RUN echo\n", "Dockerfile:1: no build stage in current context"},
		{"FROM a\n\n\nCOPPY x y\n", "Dockerfile:4: unknown instruction: COPPY (did you mean COPY?)"},
		{"FROM a\nRUN true\nCOPY onlyone\n", "Dockerfile:3: COPY requires at least two arguments, but only one was provided. Destination could not be determined"},
		{"FROM a\nADD x\n", "Dockerfile:2: ADD requires at least two arguments, but only one was provided. Destination could not be determined"},
		{"FROM a b\n", "Dockerfile:1: FROM requires either one or three arguments"},
		{"FROM a AS 1x\n", `Dockerfile:1: invalid name for build stage: "1x", name can't start with a number or contain symbols`},
		{"# escape=x\nFROM a\n", "Dockerfile:1: invalid escape token 'x' does not match ` or \\"},
		{"# syntax=foo\n# escape=|\nFROM a\n", "Dockerfile:2: invalid escape token '|' does not match ` or \\"},
		{"# escape=`\n# escape=\\\nFROM a\n", "Dockerfile:2: only one escape parser directive can be used"},
		{"FROM a\nRUN <<EOF\necho hi\n", "Dockerfile:2: unterminated heredoc"},
		{"FROM a\nSTOPSIGNAL\n", "Dockerfile:2: STOPSIGNAL requires exactly one argument"},
		{"FROM a\nRUN [\"a\", 1]\n", "Dockerfile:2: when using JSON array syntax, arrays must be comprised of strings only"},
		{"FROM a\nCOPY --from=$X a b\n", "Dockerfile:2: variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"},
		{"FROM a\nCOPY --bogus a b\n", "Dockerfile:2: unknown flag: --bogus"},
		{"FROM a\nRUN --network=bad true\n", `Dockerfile:2: invalid network mode "bad"`},
		{"FROM a\nSHELL sh -c\n", "Dockerfile:2: SHELL requires the arguments to be in JSON form"},
		{"FROM a\nONBUILD FROM b\n", "Dockerfile:2: FROM isn't allowed as an ONBUILD trigger"},
		{"FROM a\nRUN echo \\\n  one \\\n  two\nUSER\n", "Dockerfile:5: USER requires exactly one argument"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.src), "Dockerfile")
			if err == nil {
				t.Fatalf("no error for %q", tt.src)
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not *parser.Error", err)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error = %q, want %q", err.Error(), tt.want)
			}
		})
	}
}

func TestErrorf(t *testing.T) {
	eq(t, Errorf("Dockerfile.dev", 12, "COPY failed: %s", "x").Error(), "Dockerfile.dev:12: COPY failed: x")
	eq(t, Errorf("Dockerfile", 0, "whole file").Error(), "Dockerfile: whole file")
}

func TestEscapeBacktick(t *testing.T) {
	df := mustParse(t, "# escape=`\r\nFROM mcr.microsoft.com/windows/nanoserver\r\n"+
		"COPY testfile.txt c:\\\r\n"+
		"RUN dir c:\\ `\r\n    && echo done\r\n"+
		"WORKDIR C:\\Users\\app\r\n")
	eq(t, df.Escape, '`')
	steps := df.Stages[0].Steps
	c := steps[0].Cmd.(*instructions.CopyCommand)
	eq(t, c.DestPath, `c:\`)
	r := steps[1].Cmd.(*instructions.RunCommand)
	eq(t, r.CmdLine, []string{`dir c:\     && echo done`})
	eq(t, [2]int{steps[1].Line, steps[1].EndLine}, [2]int{4, 5})
	w := steps[2].Cmd.(*instructions.WorkdirCommand)
	eq(t, w.Path, `C:\Users\app`)
	// And it expands with the backtick as escape: the backslashes stay.
	x, err := Expand(w, nil, df.Escape)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, x.(*instructions.WorkdirCommand).Path, `C:\Users\app`)
}

func TestContinuationsAndComments(t *testing.T) {
	df := mustParse(t, `FROM busybox
# a comment before
RUN apk add \
    # comment inside is dropped
    curl \

    git
  ENV A=1 \
      B=2
`)
	steps := df.Stages[0].Steps
	r := steps[0].Cmd.(*instructions.RunCommand)
	eq(t, r.CmdLine, []string{"apk add     curl     git"})
	eq(t, [2]int{steps[0].Line, steps[0].EndLine}, [2]int{3, 7})
	eq(t, steps[0].Original, "RUN apk add     curl     git")
	eq(t, pairs(steps[1].Cmd.(*instructions.EnvCommand).Env), [][2]string{{"A", "1"}, {"B", "2"}})
	eq(t, [2]int{steps[1].Line, steps[1].EndLine}, [2]int{8, 9})
	if !strings.Contains(strings.Join(df.Warnings, "\n"), "NoEmptyContinuation") {
		t.Errorf("empty continuation line not warned: %q", df.Warnings)
	}
}

func TestHeredocs(t *testing.T) {
	df := mustParse(t, `FROM busybox
RUN <<EOF
echo "$HOME"
EOF
RUN <<'EOT' bash
set -e
EOT
COPY <<EOF /etc/motd
hello $NAME
EOF
COPY --chmod=755 <<"EOF" /run.sh
#!/bin/sh
echo $X
EOF
RUN <<-EOF
	tabbed
	EOF
RUN cat <<A && cat <<B
one
A
two
B
`)
	steps := df.Stages[0].Steps
	eq(t, len(steps), 6)

	r0 := steps[0].Cmd.(*instructions.RunCommand)
	eq(t, r0.CmdLine, []string{"<<EOF"})
	eq(t, r0.Files, []instructions.ShellInlineFile{{Name: "EOF", Data: "echo \"$HOME\"\n"}})
	eq(t, [2]int{steps[0].Line, steps[0].EndLine}, [2]int{2, 4})

	r1 := steps[1].Cmd.(*instructions.RunCommand)
	eq(t, r1.CmdLine, []string{"<<'EOT' bash"})
	eq(t, r1.Files, []instructions.ShellInlineFile{{Name: "EOT", Data: "set -e\n"}})

	c2 := steps[2].Cmd.(*instructions.CopyCommand)
	eq(t, c2.DestPath, "/etc/motd")
	eq(t, c2.SourcePaths, []string(nil))
	eq(t, c2.SourceContents, []instructions.SourceContent{{Path: "EOF", Data: "hello $NAME\n", Expand: true}})

	c3 := steps[3].Cmd.(*instructions.CopyCommand)
	eq(t, c3.Chmod, "755")
	eq(t, c3.SourceContents, []instructions.SourceContent{{Path: "EOF", Data: "#!/bin/sh\necho $X\n", Expand: false}})
	eq(t, [2]int{steps[3].Line, steps[3].EndLine}, [2]int{11, 14})

	r4 := steps[4].Cmd.(*instructions.RunCommand)
	eq(t, r4.Files, []instructions.ShellInlineFile{{Name: "EOF", Data: "\ttabbed\n", Chomp: true}})

	r5 := steps[5].Cmd.(*instructions.RunCommand)
	eq(t, r5.Files, []instructions.ShellInlineFile{{Name: "A", Data: "one\n"}, {Name: "B", Data: "two\n"}})

	// Expansion: only the unquoted COPY heredoc expands; RUN heredocs are the shell's.
	env := []string{"NAME=world", "X=1", "HOME=/root"}
	x2, err := Expand(c2, env, '\\')
	if err != nil {
		t.Fatal(err)
	}
	eq(t, x2.(*instructions.CopyCommand).SourceContents[0].Data, "hello world\n")
	eq(t, c2.SourceContents[0].Data, "hello $NAME\n") // original untouched
	x3, _ := Expand(c3, env, '\\')
	eq(t, x3.(*instructions.CopyCommand).SourceContents[0].Data, "#!/bin/sh\necho $X\n")
	for _, r := range []*instructions.RunCommand{r0, r1, r4, r5} {
		x, err := Expand(r, env, '\\')
		if err != nil {
			t.Fatal(err)
		}
		eq(t, x.(*instructions.RunCommand).Files, r.Files)
		eq(t, x.(*instructions.RunCommand).CmdLine, r.CmdLine)
	}
}
