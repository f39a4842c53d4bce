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
