package sandbox

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// SharedNetwork is one build's private network: a network namespace and
// the slirp4netns helper serving it, created at the first RUN that asks
// for the default network and joined by every later one, then torn down
// once by Close. A namespace and helper per RUN cost ~40 ms each, most of
// it the kernel destroying the tap device; BuildKit pools namespaces for
// the same reason (moby/buildkit util/network/cniprovider/cni.go,
// cniPool: namespaces are created ahead and reused across ExecOps).
//
// Sharing keeps RUNs apart. Each RUN still gets its own mount, pid, uts
// and ipc namespaces, and every process of it dies with its pid
// namespace, so its sockets — listeners, connections, abstract unix
// sockets, which are per network namespace — are gone before the next
// RUN starts. What a socket leaves behind in the namespace itself is
// handled where it is made: TCP keeps no TIME_WAIT entries here
// (tcp_max_tw_buckets is 0), or the next RUN could not bind a port the
// last one served; TIME_WAIT guards against late segments of a closed
// connection, and the only peers here are the namespace's own loopback
// and the helper's user-mode stack on the same host. Nothing else
// can persist: a RUN holds no CAP_NET_ADMIN, so it cannot change
// addresses, routes, sysctls or netfilter rules, and with no rules no
// conntrack state is kept. An insecure RUN (every capability) could, so
// it gets a namespace of its own instead (Run). Concurrent stages
// (--jobs) share the namespace at the same time, like processes on one
// host; they belong to the same build.
//
// The zero value is ready to use; it is safe for concurrent Runs.
type SharedNetwork struct {
	mu     sync.Mutex
	ns     *os.File // the namespace, held open between RUNs
	helper *slirp
	closed bool
}

// join returns the namespace, creating it and starting its helper (at
// path) on the first call.
func (n *SharedNetwork) join(path string) (*os.File, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, errors.New("the build's network is closed")
	}
	if n.ns != nil {
		return n.ns, nil
	}
	ns, err := newNetns()
	if err != nil {
		return nil, fmt.Errorf("create network namespace: %w", err)
	}
	h, err := startSlirp(path, 0, ns)
	if err != nil {
		ns.Close()
		return nil, err
	}
	n.ns, n.helper = ns, h
	return ns, nil
}

// Shutdown starts the teardown without waiting for it: no RUN may join
// any more, the namespace is let go and the helper is asked to exit
// (the kernel takes 5–40 ms to destroy its tap device). Close waits.
func (n *SharedNetwork) Shutdown() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.shutdown()
}

func (n *SharedNetwork) shutdown() {
	n.closed = true
	if n.ns != nil {
		n.ns.Close()
		n.helper.exitW.Close()
		n.ns = nil
	}
}

// Close shuts n down and returns once its helper is reaped; every Run
// given n must have returned. A later Run with n fails. Closing an unused
// SharedNetwork does nothing.
func (n *SharedNetwork) Close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.shutdown()
	if n.helper != nil {
		n.helper.wait()
		n.helper = nil
	}
}

// home is the process's own network namespace. A thread that visits
// another is locked to its goroutine until it returns here (goHome), so
// every unlocked thread is at home.
var home struct {
	once sync.Once
	f    *os.File
	err  error
}

// homeNetns opens home on first use, from an unlocked thread.
func homeNetns() (*os.File, error) {
	home.once.Do(func() {
		home.f, home.err = os.Open("/proc/thread-self/ns/net")
	})
	return home.f, home.err
}

// goHome returns the calling locked thread to home and unlocks it. A
// thread that cannot go back stays locked: the runtime retires it when
// its goroutine ends rather than run Go code in a foreign namespace.
func goHome() {
	if h, err := homeNetns(); err == nil && unix.Setns(int(h.Fd()), unix.CLONE_NEWNET) == nil {
		runtime.UnlockOSThread()
	}
}

// newNetns creates a network namespace with loopback up and no TCP
// TIME_WAIT, and returns it open. It unshares on a thread of its own
// that then goes home.
func newNetns() (*os.File, error) {
	if _, err := homeNetns(); err != nil {
		return nil, err
	}
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread() // unshare failed: still at home
			ch <- result{err: err}
			return
		}
		defer goHome()
		f, err := os.Open("/proc/thread-self/ns/net")
		if err == nil {
			err = configureNetns()
		}
		if err != nil && f != nil {
			f.Close()
			f = nil
		}
		ch <- result{f, err}
	}()
	r := <-ch
	return r.f, r.err
}

// configureNetns sets up the calling thread's (new) network namespace:
// loopback up, and no TIME_WAIT entries that would outlive a RUN and
// keep its ports from the next (see SharedNetwork).
func configureNetns() error {
	if err := loopbackUp(); err != nil {
		return fmt.Errorf("bring up loopback: %w", err)
	}
	// /proc/sys/net resolves against the opening thread's namespace.
	if err := os.WriteFile("/proc/sys/net/ipv4/tcp_max_tw_buckets", []byte("0"), 0); err != nil {
		return fmt.Errorf("disable TIME_WAIT: %w", err)
	}
	return nil
}
