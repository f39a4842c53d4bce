// Package flock takes advisory file locks that a context can give up on:
// the one way minibuild's processes wait for each other (a layer being
// extracted, a cache mount in use, a step another build is executing).
// A lock lives as long as its open file: a killed process releases it.
package flock

import (
	"context"
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// poll is how often a blocked lock is retried; flock(2) itself cannot be
// interrupted by a context.
const poll = 20 * time.Millisecond

// Wait takes a flock on f (unix.LOCK_SH or unix.LOCK_EX), polling so that
// ctx can end the wait.
func Wait(ctx context.Context, f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}

// Path opens (creating) the lock file p and takes an exclusive lock on it;
// release closes the file, which releases the lock.
func Path(ctx context.Context, p string) (release func(), err error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := Wait(ctx, f, unix.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}
