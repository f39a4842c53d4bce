package diskspace

import (
	"errors"
	"strings"
	"testing"
)

func TestMeter(t *testing.T) {
	dir := t.TempDir()
	free, err := Free(dir)
	if err != nil {
		t.Fatal(err)
	}
	var nilMeter *Meter
	if err := nilMeter.Need(1 << 62); err != nil {
		t.Errorf("a nil meter refused: %v", err)
	}
	if m := (Reserve{Dir: dir}).NewMeter("x"); m != nil {
		t.Error("a zero reserve made a meter")
	}
	// A reserve 8 MiB under what is free: 4 MiB pass, in small entries
	// (statfs only when the budget is spent), 9 MiB more do not (nothing was written: statfs still says 8).
	m := Reserve{Dir: dir, Bytes: free - 8<<20}.NewMeter("extract layer sha256:abc")
	for i := 0; i < 1000; i++ {
		if err := m.Entry(0); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	err = m.Need(9 << 20)
	if !errors.Is(err, ErrLow) {
		t.Fatalf("8 MiB over the reserve: %v", err)
	}
	for _, want := range []string{"extract layer sha256:abc", "not enough free disk space", dir, "9.0MiB more", "--min-free-space"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
}

func TestDefault(t *testing.T) {
	n := Default(t.TempDir() + "/not/yet/made")
	if n <= 0 || n > DefaultMax {
		t.Errorf("Default = %d", n)
	}
}
