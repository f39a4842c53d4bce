package executor

import (
	"fmt"
	"testing"
)

func TestArgsKeyTellsUnsetFromEmpty(t *testing.T) {
	tests := []struct {
		args, env []string
		want      string
	}{
		{[]string{"X="}, nil, "[X]"},
		{[]string{"X="}, []string{"X="}, "[X=]"},
		{[]string{"A=1", "B="}, []string{"PATH=/bin", "A=1"}, "[A=1 B]"},
	}
	for _, tt := range tests {
		if got := fmt.Sprint(argsKey(tt.args, tt.env)); got != tt.want {
			t.Errorf("argsKey(%q, %q) = %s, want %s", tt.args, tt.env, got, tt.want)
		}
	}
}

func TestShebangArgs(t *testing.T) {
	tests := []struct{ script, want string }{
		{"#!/bin/sh\necho hi\n", "[/bin/sh /dev/pipes/EOF]"},
		{"#!/bin/sh -e\nfalse\n", "[/bin/sh -e /dev/pipes/EOF]"},
		{"#!  /usr/bin/env  python3 -u \nprint(1)", "[/usr/bin/env python3 -u /dev/pipes/EOF]"},
		{"#!/bin/sh", "[/bin/sh /dev/pipes/EOF]"},
	}
	for _, tt := range tests {
		if got := fmt.Sprint(shebangArgs(tt.script, "/dev/pipes/EOF")); got != tt.want {
			t.Errorf("shebangArgs(%q) = %s, want %s", tt.script, got, tt.want)
		}
	}
}
