package executor

import (
	"testing"
)

func TestRedactor(t *testing.T) {
	r := redactor([]*runMount{{secret: []byte("line-one\nline-two\n")}, {secret: []byte("ab")}})
	if got := r("x line-one\nline-two y"); got != "x **** y" {
		t.Errorf("whole value: %q", got)
	}
	if got := r("only line-two here, ab stays"); got != "only **** here, ab stays" {
		t.Errorf("one line of it: %q", got)
	}
	if redactor([]*runMount{{secret: nil}}) != nil {
		t.Error("a redactor with nothing to redact")
	}
}
