# bench/side-buildkit.sh — BuildKit as an optional peer of bench/side.sh
# (sourced when BUILDKIT_BIN names a directory holding buildkitd and buildctl;
# runc is taken from there when it is there, else from PATH).
#
# buildkitd runs as root with the OCI worker (runc, overlayfs snapshotter, GC
# off), its root and socket under $work/buildkit; "docker.io" is mirrored to
# the bench's loopback registry, which holds the same busybox base as
# library/busybox, so `FROM busybox` resolves without the network. A reset
# restarts it on an empty root, so a cold build includes pulling that 1 MB
# base from the loopback registry.

bk_dir() { echo "$work/buildkit"; }

buildkitd_stop() {
	local pidf pid i
	pidf=$(bk_dir)/buildkitd.pid
	[ -f "$pidf" ] || return 0
	pid=$(cat "$pidf")
	kill "$pid" 2>/dev/null || true
	for i in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null || true
	rm -f "$pidf"
}

# buildkitd_restart [--fresh] — (re)start buildkitd, on an empty root with --fresh.
buildkitd_restart() {
	local d reg runc=runc i
	d=$(bk_dir)
	reg=$(cat "$work/registry/addr")
	[ ! -x "$BUILDKIT_BIN/runc" ] || runc=$BUILDKIT_BIN/runc
	buildkitd_stop
	[ "${1:-}" != --fresh ] || clean_tree "$d/root"
	mkdir -p "$d/root"
	cat >"$d/buildkitd.toml" <<CFG
[worker.oci]
  enabled = true
  gc = false
[worker.containerd]
  enabled = false
[registry."docker.io"]
  mirrors = ["$reg"]
[registry."$reg"]
  http = true
  insecure = true
CFG
	setsid "$BUILDKIT_BIN/buildkitd" --config "$d/buildkitd.toml" --root "$d/root" \
		--addr "unix://$d/buildkitd.sock" --oci-worker=true --containerd-worker=false \
		--oci-worker-snapshotter=overlayfs --oci-worker-binary="$runc" \
		>>"$d/buildkitd.log" 2>&1 </dev/null &
	echo $! >"$d/buildkitd.pid"
	for i in $(seq 100); do
		"$BUILDKIT_BIN/buildctl" --addr "unix://$d/buildkitd.sock" debug workers >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	die "buildkitd did not start (see $d/buildkitd.log)"
}

# start_buildkitd — the base image into the registry, then buildkitd.
start_buildkitd() {
	local reg
	reg=$(cat "$work/registry/addr")
	skopeo copy -q --dest-tls-verify=false "docker-archive:$work/base/busybox.tar" \
		"docker://$reg/library/busybox:latest"
	mkdir -p "$(bk_dir)"
	: >"$(bk_dir)/buildkitd.log"
	buildkitd_restart --fresh
	echo "== buildkitd up (pid $(cat "$(bk_dir)/buildkitd.pid"))" >&2
}
