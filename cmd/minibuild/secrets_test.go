package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadSecrets(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tok")
	if err := os.WriteFile(file, []byte("from-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TOKEN": "from-env", "api": "api-env"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for _, tc := range []struct {
		spec, id, want, err string
	}{
		{spec: "id=a,src=" + file, id: "a", want: "from-file"},
		{spec: "id=a,source=" + file, id: "a", want: "from-file"},
		{spec: "id=b,env=TOKEN", id: "b", want: "from-env"},
		{spec: "id=b,type=env,src=TOKEN", id: "b", want: "from-env"},
		{spec: "id=api", id: "api", want: "api-env"},
		{spec: "src=" + file, id: "tok", want: "from-file"},
		{spec: "id=c,env=UNSET", err: "UNSET is not set"},
		{spec: "id=d,src=" + filepath.Join(dir, "missing"), err: "id=d: read"},
		{spec: "id=e,bogus=1", err: "unknown key"},
		{spec: "justtext", err: "want id=ID"},
		{spec: "type=env", err: "no id"},
		{spec: "id=f,src=" + dir, err: "is a directory"}, // the OS error alone, never content
	} {
		got, err := loadSecrets([]string{tc.spec}, lookup)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.spec, err, tc.err)
			}
			continue
		}
		if err != nil || string(got[tc.id]) != tc.want {
			t.Errorf("%s: %q, %v; want %s=%q", tc.spec, got, err, tc.id, tc.want)
		}
	}
}
