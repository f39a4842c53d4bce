package distro

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
)

// expectations are the hand-stated checks of a case's expect.txt, one a line:
//
//	nobuildah: WHY                      build with minibuild only (heredocs…)
//	path /P type=file mode=0644 uid=0 gid=0 size=N link=T content="Go string" sha256=HEX
//	absent /P
//	hostabsent /P                       the build host has no /P (links that escape)
//	config FIELD JSON                   e.g. config Cmd ["app"]; config User "app"
//
// Every key of a path line is optional; values may be Go-quoted.
type expectations struct {
	noBuildah string
	lines     []expectLine
}

type expectLine struct {
	text  string
	kind  string // path, absent, config
	path  string // or the config field
	attrs map[string]string
	json  any
}

func readExpectations(p string) (*expectations, error) {
	data, err := os.ReadFile(p)
	if os.IsNotExist(err) {
		return &expectations{}, nil
	}
	if err != nil {
		return nil, err
	}
	exp := &expectations{}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if why, ok := strings.CutPrefix(line, "nobuildah:"); ok {
			exp.noBuildah = strings.TrimSpace(why)
			continue
		}
		l, err := parseExpectLine(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", p, i+1, err)
		}
		exp.lines = append(exp.lines, l)
	}
	return exp, nil
}

func parseExpectLine(line string) (expectLine, error) {
	kind, rest, _ := strings.Cut(line, " ")
	l := expectLine{text: line, kind: kind, attrs: map[string]string{}}
	rest = strings.TrimSpace(rest)
	switch kind {
	case "config":
		field, val, _ := strings.Cut(rest, " ")
		l.path = field
		if err := json.Unmarshal([]byte(val), &l.json); err != nil {
			return l, fmt.Errorf("config %s: value is not JSON: %v", field, err)
		}
		return l, nil
	case "absent", "hostabsent":
		l.path = rest
		return l, nil
	case "path":
	default:
		return l, fmt.Errorf("unknown expectation %q", kind)
	}
	l.path, rest, _ = strings.Cut(rest, " ")
	for rest = strings.TrimSpace(rest); rest != ""; rest = strings.TrimSpace(rest) {
		key, after, ok := strings.Cut(rest, "=")
		if !ok {
			return l, fmt.Errorf("want key=value in %q", rest)
		}
		var val string
		if strings.HasPrefix(after, `"`) {
			q, err := strconv.QuotedPrefix(after)
			if err != nil {
				return l, err
			}
			val, _ = strconv.Unquote(q)
			rest = after[len(q):]
		} else {
			val, rest, _ = strings.Cut(after, " ")
		}
		l.attrs[key] = val
	}
	return l, nil
}

// check lists the expectations the image does not meet.
func (exp *expectations) check(img *image) []string {
	var out []string
	for _, l := range exp.lines {
		if err := l.check(img); err != "" {
			out = append(out, fmt.Sprintf("%s: %s", l.text, err))
		}
	}
	return out
}

func (l expectLine) check(img *image) string {
	switch l.kind {
	case "config":
		got := configField(img.config, l.path)
		if !reflect.DeepEqual(got, l.json) {
			return "got " + jsonText(got)
		}
		return ""
	case "absent":
		if n, ok := img.files[l.path]; ok {
			return "present: " + n.String()
		}
		return ""
	case "hostabsent":
		if _, err := os.Lstat(l.path); err == nil {
			return "the build wrote " + l.path + " on the build host"
		}
		return ""
	}
	n, ok := img.files[l.path]
	if !ok {
		return "missing"
	}
	var bad []string
	for key, want := range l.attrs {
		var got string
		switch key {
		case "type":
			got = n.Type
		case "mode":
			got = fmt.Sprintf("%04o", n.Mode)
			if m, err := strconv.ParseInt(want, 8, 64); err == nil {
				want = fmt.Sprintf("%04o", m)
			}
		case "uid":
			got = strconv.Itoa(n.UID)
		case "gid":
			got = strconv.Itoa(n.GID)
		case "size":
			got = strconv.FormatInt(n.Size, 10)
		case "link":
			got = n.Link
		case "sha256":
			got = n.SHA256
		case "content":
			sum := sha256.Sum256([]byte(want))
			if n.SHA256 != hex.EncodeToString(sum[:]) {
				bad = append(bad, fmt.Sprintf("content differs (size %d, want %d)", n.Size, len(want)))
			}
			continue
		default:
			return "unknown key " + key
		}
		if got != want {
			bad = append(bad, fmt.Sprintf("%s=%s, want %s", key, got, want))
		}
	}
	return strings.Join(bad, ", ")
}
