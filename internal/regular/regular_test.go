package regular

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	file, fifo := filepath.Join(dir, "Dockerfile"), filepath.Join(dir, "fifo")
	if err := os.WriteFile(file, []byte("FROM x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFile(file, "Dockerfile"); err != nil || string(b) != "FROM x\n" {
		t.Fatalf("ReadFile = %q, %v", b, err)
	}
	done := make(chan error, 1)
	go func() { _, err := ReadFile(fifo, "Dockerfile"); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "Dockerfile "+fifo+" is a FIFO") {
			t.Errorf("a FIFO: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadFile of a FIFO blocked")
	}
	if _, err := ReadFile(dir, ".dockerignore"); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("a directory: %v", err)
	}
	if _, err := ReadFile("/dev/null", "Dockerfile"); err == nil || !strings.Contains(err.Error(), "character device") {
		t.Errorf("a device: %v", err)
	}
}
