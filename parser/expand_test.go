package parser

import (
	"strings"
	"sync"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

func TestExpandWord(t *testing.T) {
	env := []string{"V=val", "EMPTY=", "V2=first", "V2=second", "SP=a b"}
	tests := []struct {
		word, want string
		escape     rune
	}{
		{"$V", "val", '\\'},
		{"${V}x", "valx", '\\'},
		{"${V:-x}", "val", '\\'},
		{"${UNSET:-x}", "x", '\\'},
		{"${EMPTY:-x}", "x", '\\'},
		{"${EMPTY-x}", "", '\\'},
		{"${V:+x}", "x", '\\'},
		{"${UNSET:+x}", "", '\\'},
		{"$UNSET", "", '\\'},
		{`\$V`, "$V", '\\'},
		{"`$V", "$V", '`'},
		{`\$V`, `\val`, '`'},
		{"'$V'", "$V", '\\'},
		{`"$V"`, "val", '\\'},
		{"$V2", "second", '\\'}, // last wins
		{"${SP}", "a b", '\\'},
		{"busybox:${TAG:-latest}", "busybox:latest", '\\'},
	}
	for _, tt := range tests {
		got, err := ExpandWord(tt.word, env, tt.escape)
		if err != nil {
			t.Errorf("ExpandWord(%q): %v", tt.word, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ExpandWord(%q, escape %q) = %q, want %q", tt.word, tt.escape, got, tt.want)
		}
	}
	if _, err := ExpandWord("${REQ:?must be set}", nil, '\\'); err == nil || !strings.Contains(err.Error(), "must be set") {
		t.Errorf("${REQ:?} error = %v", err)
	}
}

func TestExpandInstructions(t *testing.T) {
	env := []string{"A=old", "DIR=/srv", "U=app", "P=8080", "PS=1 2", "ID=42", "SIG=SIGINT"}
	tests := []struct{ src, want string }{
		{"ENV A=new B=$A", `ENV [["A","new"],["B","old"]]`}, // ENV on one line sees the OLD A
		{`ENV Q="quoted $A" R='single $A'`, `ENV [["Q","quoted old"],["R","single $A"]]`},
		{`ENV E=\$A`, `ENV [["E","$A"]]`},
		{"WORKDIR ${DIR}/app", `WORKDIR "/srv/app"`},
		{"WORKDIR ${NOPE:-/tmp}", `WORKDIR "/tmp"`},
		{"USER $U:${U}", `USER "app:app"`},
		{"LABEL a.$A=${DIR:+set}", `LABEL [["a.old","set"]]`},
		{"EXPOSE $P ${PS}", `EXPOSE ["8080","1","2"]`},
		{"VOLUME $DIR/data", `VOLUME ["/srv/data"]`},
		{"STOPSIGNAL $SIG", `STOPSIGNAL "SIGINT"`},
		{"COPY --chown=$U:$U --chmod=${M:-644} src$ID $DIR/", `COPY {"src":["src42"],"dest":"/srv/","chown":"app:app","chmod":"644"}`},
		{"ADD --checksum=$A a b", `ADD {"src":["a"],"dest":"b","checksum":"old"}`},
		// The shell does RUN/CMD/ENTRYPOINT: nothing expands there...
		{"RUN echo $A ${DIR}", `RUN {"cmd":["echo $A ${DIR}"],"shell":true,"network":"default","security":"sandbox"}`},
		{`CMD ["echo", "$A"]`, `CMD {"cmd":["echo","$A"],"shell":false}`},
		{"ENTRYPOINT exec $A", `ENTRYPOINT {"cmd":["exec $A"],"shell":true}`},
		// ...except RUN --mount values.
		{"RUN --mount=type=cache,id=c$ID,target=$DIR true", `RUN {"cmd":["true"],"shell":true,"mounts":[{"Type":"cache","From":"","Source":"","Target":"/srv","ReadOnly":false,"SizeLimit":0,"CacheID":"c42","CacheSharing":"","Required":false,"Env":null,"Mode":null,"UID":null,"GID":null}],"network":"default","security":"sandbox"}`},
		// ARG defaults are expanded by Scope.Arg, not here.
		{"ARG X=$A", `ARG [{"key":"X","value":"$A"}]`},
		{"ONBUILD RUN echo $A", `ONBUILD "RUN echo $A"`},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			st := onlyStep(t, tt.src)
			before := Canonical(st.Cmd)
			x, err := Expand(st.Cmd, env, '\\')
			if err != nil {
				t.Fatal(err)
			}
			if got := Canonical(x); got != tt.want {
				t.Errorf("expanded = %s\n          want %s", got, tt.want)
			}
			if after := Canonical(st.Cmd); after != before {
				t.Errorf("Expand mutated the parsed command: %s -> %s", before, after)
			}
			if x == st.Cmd {
				t.Errorf("Expand returned the same pointer")
			}
		})
	}
}

func TestExpandErrors(t *testing.T) {
	for _, src := range []string{
		"WORKDIR ${X:?X is required}",
		"RUN --mount=type=bogus true",
		"COPY ${X:?no} /",
	} {
		st := onlyStep(t, src)
		if _, err := Expand(st.Cmd, nil, '\\'); err == nil {
			t.Errorf("Expand(%q): no error", src)
		}
	}
}

// The parsed Dockerfile is shared by concurrent builds: expanding one RUN
// with different envs at once must neither race nor leak mounts between them.
func TestExpandRunIsolated(t *testing.T) {
	st := onlyStep(t, "RUN --mount=type=cache,id=$ID,target=/c true")
	var wg sync.WaitGroup
	for _, id := range []string{"a", "b", "c", "d"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				x, err := Expand(st.Cmd, []string{"ID=" + id}, '\\')
				if err != nil {
					t.Error(err)
					return
				}
				if m := instructions.GetMounts(x.(*instructions.RunCommand)); len(m) != 1 || m[0].CacheID != id {
					t.Errorf("mount id = %+v, want %s", m, id)
					return
				}
			}
		}()
	}
	wg.Wait()
	if m := instructions.GetMounts(st.Cmd.(*instructions.RunCommand)); len(m) != 1 || m[0].CacheID != "" {
		t.Errorf("original mounts changed: %+v", m[0])
	}
}

func TestExpandRunBacktickHeredoc(t *testing.T) {
	df := mustParse(t, "# escape=`\nFROM x\nRUN --mount=type=tmpfs,target=C:\\t `\n  <<EOF\necho `$X\nEOF\n")
	r := df.Stages[0].Steps[0].Cmd
	x, err := Expand(r, nil, df.Escape)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, Canonical(x) != "", true)
	eq(t, x.(*instructions.RunCommand).Files, r.(*instructions.RunCommand).Files)
	eq(t, instructions.GetMounts(x.(*instructions.RunCommand))[0].Target, `C:\t`)
}
