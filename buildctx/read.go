package buildctx

import (
	"crypto/sha256"
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ReadFile reads a regular file of the context whole into buf (grown when
// too small) and returns its content with its sha256: the digest Sum
// gives, which the caller may put in a layer as the digest of exactly
// these bytes. It reads with bare fd calls (no os.File), for callers that
// read many small files.
//
// The open file, once read, must still be the one the walk saw (size,
// mtime, ctime, inode, device; one fstat after the read covers a file
// swapped before the open as well as one written during the read). The
// digest is then taken as proven, not hashed again, when the file's mtime
// is older than the read by the racy margin: a write since the digest was
// taken would have moved the mtime or the ctime (the stat cache's own
// rule). Otherwise the bytes read are
// hashed, and a digest other than Sum's is an error: the file changed
// since the cache key was computed.
func (c *Context) ReadFile(f *File, buf []byte) ([]byte, [sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	known, err := c.Sum(f)
	if err != nil {
		return nil, sum, err
	}
	start := c.now().UnixNano()
	fd, err := unix.Open(filepath.Join(c.dir, filepath.FromSlash(f.Path)), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, sum, fmt.Errorf("open context file %s: %w", f.Path, err)
	}
	defer unix.Close(fd)
	if int64(cap(buf)) < f.Size {
		buf = make([]byte, f.Size)
	}
	data := buf[:f.Size]
	for n := 0; n < len(data); {
		k, err := unix.Read(fd, data[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, sum, fmt.Errorf("read context file %s: %w", f.Path, err)
		}
		if k == 0 {
			return nil, sum, fmt.Errorf("read context file %s: file changed during the build", f.Path)
		}
		n += k
	}
	if err := c.same(fd, f); err != nil {
		return nil, sum, err
	}
	if settled(f.mtimeNs, start) {
		return data, known, nil
	}
	if sum = sha256.Sum256(data); sum != known {
		return nil, sum, fmt.Errorf("read context file %s: file changed during the build", f.Path)
	}
	return data, sum, nil
}

// same checks that the open fd is still the file the walk saw.
func (c *Context) same(fd int, f *File) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat context file %s: %w", f.Path, err)
	}
	if st.Size != f.Size || st.Mtim.Nano() != f.mtimeNs || st.Ctim.Nano() != f.ctimeNs || st.Ino != f.Ino || st.Dev != f.Dev {
		return fmt.Errorf("read context file %s: file changed during the build", f.Path)
	}
	return nil
}
