package layer

// Replaces is the one rule for two tar entries at the same path, applied
// by every reader of a tar minibuild has — layer extraction, -o
// type=local and ADD of a local archive: the later entry wins, and
// replaces what the earlier one made, everything under it included,
// unless both are directories; then the directory stays (with its
// contents) and takes the later entry's metadata. It is docker's and
// containerd's rule (pkg/archive createTarFile: RemoveAll unless both are
// directories). An entry whose parent an earlier entry made a
// non-directory (not a symlink) is an error: "parent X is not a
// directory", as in docker.
func Replaces(oldIsDir, newIsDir bool) bool { return !(oldIsDir && newIsDir) }
