package executor

import (
	"io/fs"
	"reflect"
	"testing"
)

func TestResolveUser(t *testing.T) {
	files := map[string]string{
		"/etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
		"/etc/group":  "root:x:0:\napp:x:1000:\nstaff:x:50:app,other\n",
	}
	read := func(p string) ([]byte, error) {
		if s, ok := files[p]; ok {
			return []byte(s), nil
		}
		return nil, fs.ErrNotExist
	}
	cases := []struct {
		spec    string
		want    identity
		wantErr bool
	}{
		{"", identity{0, 0, nil}, false},
		{"root", identity{0, 0, nil}, false},
		{"app", identity{1000, 1000, []uint32{50}}, false},
		{"1000", identity{1000, 1000, []uint32{50}}, false},
		{"4242", identity{4242, 0, nil}, false},
		{"app:staff", identity{1000, 50, nil}, false},
		{"app:7", identity{1000, 7, nil}, false},
		{"nobody", identity{}, true},
		{"app:nogroup", identity{}, true},
	}
	for _, c := range cases {
		got, err := resolveUser(read, c.spec)
		if (err != nil) != c.wantErr {
			t.Errorf("%q: err = %v, wantErr %v", c.spec, err, c.wantErr)
			continue
		}
		if !c.wantErr && !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q: got %+v, want %+v", c.spec, got, c.want)
		}
	}
}
