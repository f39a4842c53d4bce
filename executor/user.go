package executor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
)

// identity is a resolved user: what a RUN runs as, what --chown sets.
type identity struct {
	UID, GID uint32
	Groups   []uint32
	// Home is the passwd entry's home dir, "/" without an entry: a RUN's
	// HOME when the image sets none (runc's defaultExecUser).
	Home string
}

// fileReader reads a file of the image's rootfs.
type fileReader func(path string) ([]byte, error)

// imageFiles reads files of the stage's rootfs as it is now.
func (r *stageRun) imageFiles(ctx context.Context) fileReader {
	sn, layers := r.b.opts.Snapshots, r.state.layers
	return func(path string) ([]byte, error) { return sn.ReadFile(ctx, layers, path) }
}

// resolveUser resolves a USER value ("name", "uid", "name:group",
// "uid:gid") through the image's /etc/passwd and /etc/group, as docker
// does: a numeric uid needs no passwd entry (gid 0 then), a name does.
func resolveUser(read fileReader, spec string) (identity, error) {
	if spec == "" {
		spec = "0" // docker runs an unset USER as uid 0, with or without a passwd file
	}
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	id := identity{Home: "/"}
	var userName string
	passwd, err := readDB(read, "/etc/passwd")
	if err != nil {
		return id, err
	}
	if n, err := strconv.ParseUint(userPart, 10, 32); err == nil {
		id.UID = uint32(n)
		for _, e := range passwd {
			if e[2] == userPart {
				userName = e[0]
				g, _ := strconv.ParseUint(e[3], 10, 32)
				id.GID = uint32(g)
				id.Home = homeOf(e)
				break
			}
		}
	} else {
		found := false
		for _, e := range passwd {
			if e[0] == userPart {
				u, err1 := strconv.ParseUint(e[2], 10, 32)
				g, err2 := strconv.ParseUint(e[3], 10, 32)
				if err1 != nil || err2 != nil {
					return id, fmt.Errorf("invalid /etc/passwd entry for user %s", userPart)
				}
				id.UID, id.GID, userName, found = uint32(u), uint32(g), e[0], true
				id.Home = homeOf(e)
				break
			}
		}
		if !found {
			return id, fmt.Errorf("unable to find user %s: no matching entries in passwd file", userPart)
		}
	}
	groups, err := readDB(read, "/etc/group")
	if err != nil {
		return id, err
	}
	if hasGroup {
		gid, err := resolveGroup(groups, groupPart)
		if err != nil {
			return id, err
		}
		id.GID = gid
		return id, nil // an explicit group replaces the supplementary groups, as docker does
	}
	if userName != "" {
		for _, g := range groups {
			for _, member := range strings.Split(g[3], ",") {
				if member == userName {
					if n, err := strconv.ParseUint(g[2], 10, 32); err == nil && uint32(n) != id.GID {
						id.Groups = append(id.Groups, uint32(n))
					}
				}
			}
		}
	}
	return id, nil
}

// homeOf is a passwd entry's home dir; "/" when it has none.
func homeOf(entry []string) string {
	if entry[5] == "" {
		return "/"
	}
	return entry[5]
}

// resolveOwner resolves a COPY/ADD --chown value as BuildKit does
// (solver/llbsolver/ops/file.go, readUser): a numeric user is that uid
// and, without a group, the same number as gid, passwd or not; a user
// name takes its passwd entry's uid and primary gid; a group, numeric or
// a name in /etc/group, replaces the gid.
func resolveOwner(read fileReader, spec string) (uid, gid int, err error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if n, err := strconv.ParseUint(userPart, 10, 32); err == nil {
		uid, gid = int(n), int(n)
	} else {
		id, err := resolveUser(read, userPart)
		if err != nil {
			return 0, 0, err
		}
		uid, gid = int(id.UID), int(id.GID)
	}
	if !hasGroup {
		return uid, gid, nil
	}
	groups, err := readDB(read, "/etc/group")
	if err != nil {
		return 0, 0, err
	}
	g, err := resolveGroup(groups, groupPart)
	return uid, int(g), err
}

func resolveGroup(groups [][]string, name string) (uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), nil
	}
	for _, g := range groups {
		if g[0] == name {
			n, err := strconv.ParseUint(g[2], 10, 32)
			if err != nil {
				return 0, fmt.Errorf("invalid /etc/group entry for group %s", name)
			}
			return uint32(n), nil
		}
	}
	return 0, fmt.Errorf("unable to find group %s: no matching entries in group file", name)
}

// readDB reads a colon-separated database file; a missing file is empty.
// Each row has at least seven fields (passwd has seven, group four).
func readDB(read fileReader, path string) ([][]string, error) {
	b, err := read(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var rows [][]string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		for len(f) < 7 {
			f = append(f, "")
		}
		rows = append(rows, f)
	}
	return rows, nil
}
