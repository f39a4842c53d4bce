package parser

import (
	"testing"
)

func canon(t *testing.T, src string) string {
	t.Helper()
	st := onlyStep(t, src)
	x, err := Expand(st.Cmd, []string{"V=1"}, '\\')
	if err != nil {
		t.Fatalf("Expand(%q): %v", src, err)
	}
	return Canonical(x)
}

func TestCanonicalSame(t *testing.T) {
	pairs := [][2]string{
		{"RUN echo hi", "run   echo hi"},
		{"RUN echo hi", "RUN echo \\\nhi"},
		{`RUN ["a", "b"]`, `RUN [ "a","b" ]`},
		{"ENV A=1 B=2", "ENV A=1   B=2"},
		{"ENV A 1", "ENV A=1"},
		{`ENV A="x y"`, `ENV A=x\ y`},
		{"LABEL a=b", "label a=b"},
		{"COPY --chown=1:1 a /b", "COPY   --chown=1:1   a   /b"},
		{"COPY a $V", "COPY a 1"},
		{"EXPOSE 80 443", "EXPOSE 443 80"},
		{"WORKDIR /x", "WORKDIR   /x  "},
		{"COPY --link=true a b", "COPY --link a b"},
	}
	for _, p := range pairs {
		a, b := canon(t, p[0]), canon(t, p[1])
		if a != b {
			t.Errorf("%q and %q differ:\n%s\n%s", p[0], p[1], a, b)
		}
		if again := canon(t, p[0]); again != a {
			t.Errorf("%q not stable: %s vs %s", p[0], a, again)
		}
	}
}

func TestCanonicalDiffers(t *testing.T) {
	all := []string{
		"RUN echo hi",
		"RUN echo  hi",
		`RUN ["echo", "hi"]`,
		`RUN ["echo hi"]`,
		"RUN --network=none echo hi",
		"RUN --network=host echo hi",
		"RUN --mount=type=cache,target=/c echo hi",
		"RUN --mount=type=cache,target=/d echo hi",
		"RUN --mount=type=secret,id=s echo hi",
		"RUN --security=insecure echo hi",
		"RUN <<EOF\necho hi\nEOF",
		"RUN <<EOF\necho ho\nEOF",
		"RUN <<-EOF\necho hi\nEOF",
		"CMD echo hi",
		`CMD ["echo", "hi"]`,
		"ENTRYPOINT echo hi",
		"COPY a b",
		"COPY a c",
		"COPY a b c/",
		"COPY [\"a b\", \"c/\"]",
		"COPY --chown=1 a b",
		"COPY --chown=2 a b",
		"COPY --chmod=600 a b",
		"COPY --from=x a b",
		"COPY --link a b",
		"COPY --parents a b",
		"COPY --exclude=*.md a b",
		"COPY <<EOF b\nx\nEOF",
		"COPY <<EOF b\ny\nEOF",
		"COPY <<'EOF' b\n$V\nEOF",
		"COPY <<EOF b\n$V\nEOF",
		"ADD a b",
		"ADD --checksum=sha256:00 a b",
		"ADD --unpack=false a b",
		"ADD --keep-git-dir a b",
		"ENV A=1",
		"ENV A=2",
		"ENV A=1 B=2",
		"ENV A=1B=2",
		"ARG A",
		"ARG A=",
		"ARG A=1",
		"LABEL A=1",
		"WORKDIR /a",
		"USER a",
		"VOLUME /a",
		"EXPOSE 80",
		"EXPOSE 80/udp",
		"STOPSIGNAL 9",
		"SHELL [\"/bin/sh\", \"-c\"]",
		"SHELL [\"/bin/sh -c\"]",
		"HEALTHCHECK CMD true",
		"HEALTHCHECK --interval=3s CMD true",
		`HEALTHCHECK CMD ["true"]`,
		"HEALTHCHECK NONE",
		"ONBUILD RUN a",
		"MAINTAINER a",
	}
	seen := map[string]string{}
	for _, src := range all {
		c := canon(t, src)
		if prev, ok := seen[c]; ok {
			t.Errorf("%q and %q have the same canonical text %s", prev, src, c)
		}
		seen[c] = src
	}
}

// TestCanonicalText pins the text of COPY and ADD: it enters every key, so
// a change here must bump the key version.
func TestCanonicalText(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"COPY a b", "COPY {\"src\":[\"a\"],\"dest\":\"b\"}"},
		{"COPY --from=x --chown=1:2 --chmod=600 --link --parents --exclude=*.md a c /d/", "COPY {\"src\":[\"a\",\"c\"],\"dest\":\"/d/\",\"from\":\"x\",\"chown\":\"1:2\",\"chmod\":\"600\",\"link\":true,\"parents\":true,\"exclude\":[\"*.md\"]}"},
		{"COPY <<EOF /f\nhello\nEOF", "COPY {\"src\":[],\"heredocs\":[{\"Path\":\"EOF\",\"Data\":\"hello\\n\",\"Expand\":true}],\"dest\":\"/f\"}"},
		{"ADD a b", "ADD {\"src\":[\"a\"],\"dest\":\"b\"}"},
		{"ADD --chown=1 --chmod=755 --link --exclude=x --keep-git-dir=true --checksum=sha256:aa --unpack=false https://x/y /z", "ADD {\"src\":[\"https://x/y\"],\"dest\":\"/z\",\"chown\":\"1\",\"chmod\":\"755\",\"link\":true,\"exclude\":[\"x\"],\"keep_git_dir\":true,\"checksum\":\"sha256:aa\",\"unpack\":false}"},
	} {
		if got := canon(t, c.src); got != c.want {
			t.Errorf("%q:\n got %s\nwant %s", c.src, got, c.want)
		}
	}
}
