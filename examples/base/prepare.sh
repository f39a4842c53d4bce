#!/bin/sh
# prepare.sh [ROOTFS_DIR] — fill ROOTFS_DIR (default: rootfs/ next to this script)
# with a busybox root filesystem made from Debian's busybox-static package:
# /bin/busybox, one relative symlink per applet, /etc/passwd and /etc/group
# (root, daemon, nobody, app uid/gid 1000), /tmp (1777), /root and /home/app.
#
# The result depends only on the busybox binary, so every host with the same
# package version produces the same files and therefore the same image.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-$here/rootfs}
busybox=${BUSYBOX:-/bin/busybox}

if [ ! -x "$busybox" ]; then
	echo "prepare.sh: $busybox not found; install it with: apt-get install -y busybox-static" >&2
	exit 1
fi
if ! "$busybox" --list >/dev/null 2>&1; then
	echo "prepare.sh: $busybox does not list its applets; is it busybox-static?" >&2
	exit 1
fi
if command -v file >/dev/null 2>&1 && ! file -L "$busybox" | grep -q 'statically linked'; then
	echo "prepare.sh: $busybox is not statically linked; install busybox-static" >&2
	exit 1
fi

# Start from nothing so a stale tree never leaks into the image.
rm -rf "$dest"
mkdir -p "$dest"
cd "$dest"

for d in bin sbin etc dev proc sys tmp root home home/app usr usr/bin usr/sbin \
	usr/local usr/local/bin var var/log var/tmp; do
	mkdir -p "$d"
	chmod 0755 "$d"
done
chmod 1777 tmp var/tmp
chmod 0700 root

cp "$busybox" bin/busybox
chmod 0755 bin/busybox

# One symlink per applet, all in /bin (relative, so extraction never leaves the rootfs).
"$busybox" --list | while IFS= read -r applet; do
	case "$applet" in
	"" | busybox | */*) continue ;;
	esac
	ln -sf busybox "bin/$applet"
done

cat >etc/passwd <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
PASSWD
cat >etc/group <<'GROUP'
root:x:0:
daemon:x:1:
nogroup:x:65534:
app:x:1000:
GROUP
chmod 0644 etc/passwd etc/group

# Ownership needs root; an unprivileged run still gives a usable tree.
if [ "$(id -u)" = 0 ]; then
	chown -R 0:0 .
	chown 1000:1000 home/app
fi

echo "prepare.sh: $(ls bin | wc -l) entries in $dest/bin ($("$busybox" | head -n 1))" >&2
