package flock

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestPathExcludesAndContextEndsTheWait(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	release, err := Path(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := Path(ctx, p); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a second lock while the first is held: %v, want the context's deadline", err)
	}
	release()
	again, err := Path(context.Background(), p)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	again()
}
