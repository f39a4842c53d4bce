// Package mount describes filesystems to mount. It is the vocabulary that
// snapshot (which decides how a rootfs or a bind view is made) and sandbox
// (which mounts them, in its own mount namespace) share, as containerd's
// mount.Mount is between its snapshotters and runtimes: callers receive
// mounts, not paths, so how a view is made stays the snapshotter's choice.
package mount

// Mount is one filesystem to mount.
type Mount struct {
	// Type is "bind" (Source is a host file or dir) or a mount(2)
	// filesystem type ("overlay", "tmpfs") with Source as its source.
	Type   string
	Source string
	// Target is an absolute path in the rootfs; empty for the rootfs.
	Target string
	// Options are the filesystem's data ("lowerdir=…"), joined with
	// commas for mount(2); a bind takes none.
	Options []string
	// ReadOnly mounts it read-only.
	ReadOnly bool
	// Dir, when set, is the directory the mounter chdirs into before
	// mounting: relative paths in Options are relative to it, which keeps
	// the options of a long overlay chain within one page.
	Dir string
}

// Point is a path in the rootfs where something will be mounted. The
// snapshot creates it when the layer chain lacks it, with any missing
// parents, and keeps what it created out of the layer.
type Point struct {
	// Path is absolute in the rootfs; symlinks along it resolve inside
	// the rootfs.
	Path string
	// Dir tells whether it must be a directory (else a file).
	Dir bool
	// Optional points are made where the rootfs allows (one whose /etc is
	// a file gets no /etc/hosts); a required point that cannot be made is
	// an error.
	Optional bool
}
