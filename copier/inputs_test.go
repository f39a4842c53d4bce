package copier

import (
	"fmt"
	"testing"
)

func TestInputLineIsFmts(t *testing.T) {
	for _, e := range []*entry{
		{typ: '0', mode: 0o644, uid: 0, gid: 0, kind: srcContext, raw: [32]byte{1, 2, 255}},
		{typ: '2', mode: 0o777, uid: 1000, gid: 65534, sum: "sha256:abc", link: "../t"},
		{typ: '5', mode: 0o7755, uid: -1, gid: 7, kind: srcArchive, sum: ""},
	} {
		want := fmt.Sprintf("%c %o %d:%d %s %s", e.typ, e.mode, e.uid, e.gid, e.digest(), e.link)
		if got := inputLine(nil, e); got != want {
			t.Errorf("%q, want %q", got, want)
		}
	}
}
