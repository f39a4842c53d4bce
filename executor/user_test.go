package executor

import (
	"io/fs"
	"reflect"
	"testing"
)

// fakeFiles reads an image's files from a map.
func fakeFiles(files map[string]string) fileReader {
	return func(p string) ([]byte, error) {
		if s, ok := files[p]; ok {
			return []byte(s), nil
		}
		return nil, fs.ErrNotExist
	}
}

func TestResolveUser(t *testing.T) {
	files := map[string]string{
		"/etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nnohome:x:1001:1001\n",
		"/etc/group":  "root:x:0:\napp:x:1000:\nstaff:x:50:app,other\n",
	}
	read := fakeFiles(files)
	cases := []struct {
		spec    string
		want    identity
		wantErr bool
	}{
		{"", identity{0, 0, nil, "/root"}, false},
		{"root", identity{0, 0, nil, "/root"}, false},
		{"app", identity{1000, 1000, []uint32{50}, "/home/app"}, false},
		{"1000", identity{1000, 1000, []uint32{50}, "/home/app"}, false},
		{"4242", identity{4242, 0, nil, "/"}, false},
		{"nohome", identity{1001, 1001, nil, "/"}, false},
		{"app:staff", identity{1000, 50, nil, "/home/app"}, false},
		{"app:7", identity{1000, 7, nil, "/home/app"}, false},
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

// --chown follows BuildKit's readUser: a numeric uid alone is also the
// gid, with or without a passwd entry; a name takes its entry's uid and
// primary gid.
// An image without /etc/passwd runs an unset USER as root, as docker does.
func TestResolveUserWithoutPasswd(t *testing.T) {
	got, err := resolveUser(fakeFiles(nil), "")
	if err != nil || !reflect.DeepEqual(got, identity{Home: "/"}) {
		t.Errorf("resolveUser without passwd: %+v, %v", got, err)
	}
}

func TestResolveOwner(t *testing.T) {
	files := map[string]string{
		"/etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
		"/etc/group":  "root:x:0:\napp:x:1001:\nstaff:x:50:app\n",
	}
	read := fakeFiles(files)
	cases := []struct {
		spec     string
		uid, gid int
		wantErr  bool
	}{
		{"1000", 1000, 1000, false}, // the passwd entry's gid (1001) does not count
		{"4242", 4242, 4242, false},
		{"app", 1000, 1001, false},
		{"app:staff", 1000, 50, false},
		{"1000:7", 1000, 7, false},
		{"0", 0, 0, false},
		{"nobody", 0, 0, true},
		{"app:nogroup", 0, 0, true},
	}
	for _, c := range cases {
		uid, gid, err := resolveOwner(read, c.spec)
		if (err != nil) != c.wantErr {
			t.Errorf("%q: err = %v, wantErr %v", c.spec, err, c.wantErr)
			continue
		}
		if !c.wantErr && (uid != c.uid || gid != c.gid) {
			t.Errorf("%q: got %d:%d, want %d:%d", c.spec, uid, gid, c.uid, c.gid)
		}
	}
}

func TestRunEnvDefaults(t *testing.T) {
	cases := []struct {
		env  []string
		home string
		want []string
	}{
		{nil, "/root", []string{"PATH=" + defaultPath, "HOME=/root", "HOSTNAME=" + runHostname}},
		{[]string{"PATH=/bin", "HOME=/srv", "HOSTNAME=h"}, "/root", []string{"PATH=/bin", "HOME=/srv", "HOSTNAME=h"}},
		{[]string{"HOME="}, "/home/app", []string{"HOME=/home/app", "PATH=" + defaultPath, "HOSTNAME=" + runHostname}},
	}
	for _, c := range cases {
		if got := runEnv(c.env, identity{Home: c.home}); !reflect.DeepEqual(got, c.want) {
			t.Errorf("runEnv(%q) = %q, want %q", c.env, got, c.want)
		}
	}
}
