package copier

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minibuild/minibuild/buildctx"
	"github.com/minibuild/minibuild/layer"
)

// TestWriteFailsOnAFileChangedSincePlan: whether read ahead (small) or
// inline (larger), a context file rewritten between Plan and Write fails
// the write, naming it, and stops the read-ahead.
func TestWriteFailsOnAFileChangedSincePlan(t *testing.T) {
	for _, size := range []int{10, aheadMax + 1} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			dir := t.TempDir()
			for i := 0; i < 100; i++ {
				must(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", i)), bytes.Repeat([]byte{'a'}, size), 0o644))
			}
			c, err := buildctx.Open(context.Background(), dir, buildctx.Options{})
			must(t, err)
			defer c.Close()
			p, err := Plan(context.Background(), c, Request{Sources: []string{"."}, Dest: "/src/"})
			must(t, err)
			defer p.Close()
			must(t, os.WriteFile(filepath.Join(dir, "f050"), bytes.Repeat([]byte{'b'}, size), 0o644))
			var buf bytes.Buffer
			w := layer.NewWriter(&buf, layer.Options{})
			defer w.Abort()
			err = p.Write(w)
			if err == nil || !strings.Contains(err.Error(), "f050") || !strings.Contains(err.Error(), "changed") {
				t.Fatalf("Write: %v", err)
			}
		})
	}
}
