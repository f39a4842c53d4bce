package layer

import (
	"archive/tar"
	"strings"
)

// ustarHeader formats hdr (already normalized) into b the way archive/tar
// does when it picks USTAR for it, and reports whether hdr is in the
// plain class where that is certain: a regular file, directory, symlink
// or hard link; name and link target of at most 100 non-NUL ASCII bytes;
// no user or group names, device numbers, PAX records, atime or ctime; a
// whole-second mtime and numbers that fit their octal fields. Any other
// header goes through archive/tar. The output is the same bytes either
// way (TestUSTARHeaderMatchesArchiveTar): only the formatting is cheaper.
func ustarHeader(hdr *tar.Header, b *[blockSize]byte) bool {
	switch hdr.Typeflag {
	case tar.TypeReg:
		if strings.HasSuffix(hdr.Name, "/") {
			return false // archive/tar refuses it
		}
	case tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
		if hdr.Size != 0 {
			return false
		}
	default:
		return false
	}
	if hdr.Format != tar.FormatPAX || len(hdr.PAXRecords) > 0 || len(hdr.Xattrs) > 0 || //nolint:staticcheck // checked to be empty
		hdr.Uname != "" || hdr.Gname != "" || hdr.Devmajor != 0 || hdr.Devminor != 0 ||
		!hdr.AccessTime.IsZero() || !hdr.ChangeTime.IsZero() || !plainASCII(hdr.Name) || !plainASCII(hdr.Linkname) {
		return false
	}
	var mtime int64
	if !hdr.ModTime.IsZero() {
		if hdr.ModTime.Nanosecond() != 0 {
			return false
		}
		mtime = hdr.ModTime.Unix()
	}
	const max7, max11 = 1 << 21, 1 << 33 // what 7 and 11 octal digits hold
	if !in(hdr.Mode, max7) || !in(int64(hdr.Uid), max7) || !in(int64(hdr.Gid), max7) || !in(hdr.Size, max11) || !in(mtime, max11) {
		return false
	}
	*b = [blockSize]byte{}
	copy(b[0:100], hdr.Name)
	octal(b[100:108], hdr.Mode)
	octal(b[108:116], int64(hdr.Uid))
	octal(b[116:124], int64(hdr.Gid))
	octal(b[124:136], hdr.Size)
	octal(b[136:148], mtime)
	b[156] = hdr.Typeflag
	copy(b[157:257], hdr.Linkname)
	copy(b[257:263], "ustar\x00")
	copy(b[263:265], "00")
	octal(b[329:337], 0) // device numbers
	octal(b[337:345], 0)
	var sum int64
	for i, c := range b {
		if 148 <= i && i < 156 {
			c = ' '
		}
		sum += int64(c)
	}
	octal(b[148:155], sum)
	b[155] = ' '
	return true
}

func in(x, limit int64) bool { return x >= 0 && x < limit }

// plainASCII: at most 100 bytes, none NUL, none above 0x7f.
func plainASCII(s string) bool {
	if len(s) > 100 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 || s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// octal writes x as len(f)-1 zero-padded octal digits and a NUL.
func octal(f []byte, x int64) {
	for i := len(f) - 2; i >= 0; i-- {
		f[i] = byte('0' + x&7)
		x >>= 3
	}
	f[len(f)-1] = 0
}
