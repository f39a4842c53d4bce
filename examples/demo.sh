#!/bin/sh
# demo.sh — the three kinds of layer reuse minibuild exists for, each ending
# in one line that says what was reused:
#
#   (1) within a project: python-app is built, app.py edited (in a temporary
#       copy) and rebuilt: the steps before COPY app.py are cached;
#   (2) across images: app-b, another Dockerfile with python-app's first
#       steps, reuses them, and `df -v` shows their layers stored once;
#   (3) across hosts: both images and a --cache-to cache are pushed to a
#       local docker-registry; a second --root (another "host") pulls app-a,
#       then app-b without downloading the layers they share, and builds
#       app-a with --cache-from without running a step.
#
# Needs root, busybox-static, docker-registry and jq (make demo installs them).
# Environment:
#   MINIBUILD       the binary (default: bin/minibuild of this repository, else minibuild on PATH)
#   MINIBUILD_ROOT  the first host's store (default: a temporary one, so the numbers are
#                   those of a first run); busybox:latest is built into it when missing
# Everything temporary (copies, the second host, the registry and its
# process) is removed on exit, also on failure or interrupt.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${MINIBUILD:-}" ]; then
	MB=$MINIBUILD
elif [ -x "$here/../bin/minibuild" ]; then
	MB=$here/../bin/minibuild
else
	MB=minibuild
fi
for tool in "$MB" jq docker-registry; do
	command -v "$tool" >/dev/null || { echo "demo.sh: $tool not found" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/minibuild-demo.XXXXXX")
reg_pid=
cleanup() {
	status=$?
	if [ -n "$reg_pid" ]; then
		kill "$reg_pid" 2>/dev/null || true
		wait "$reg_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

root1=${MINIBUILD_ROOT:-$work/host1}
root2=$work/host2

say() { printf '\n==> %s\n' "$*"; }
mb1() { "$MB" --root "$root1" "$@"; }
mb2() { "$MB" --root "$root2" "$@"; }

# build MB_FN LOG ARGS...: a build with --progress=json into LOG, shown as
# one line per step; the whole log on failure.
build() {
	fn=$1 log=$2
	shift 2
	if ! "$fn" build --progress=json "$@" 2>"$log"; then
		cat "$log" >&2
		return 1
	fi
	jq -r 'select(.event == "step" and (.status == "cached" or .status == "done"))
		| "    [\(.step)/\(.steps)] \(if .status == "cached" then "CACHED" else "built " end) \(.instruction)"
		  + (if .reason then "   (\(.reason))" else "" end)' "$log"
	jq -r 'select(.event == "result") | "    => \(.tags | join(",")) \(.image_id[7:19]): \(.steps_cached) cached, \(.steps_built) built"' "$log"
}
# result LOG FIELD: a field of the build's result event.
result() { jq -r "select(.event == \"result\") | .$2" "$1"; }
# human BYTES: a size as df prints it.
human() {
	awk -v b="$1" 'BEGIN {
		if (b >= 2^30) printf "%.2fGB\n", b / 2^30
		else if (b >= 2^20) printf "%.2fMB\n", b / 2^20
		else if (b >= 2^10) printf "%.2fkB\n", b / 2^10
		else printf "%dB\n", b }'
}

# --- (1) within a project -------------------------------------------------
if ! mb1 inspect -f '{{.Id}}' busybox:latest >/dev/null 2>&1; then
	say "the busybox base (examples/base) as busybox:latest"
	cp -a "$here/base" "$work/base"
	"$work/base/prepare.sh" "$work/base/rootfs" >/dev/null
	SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000} build mb1 "$work/base.log" -t busybox:latest "$work/base"
fi
app=$work/app-a
cp -a "$here/python-app/." "$app/"
say "minibuild build -t myapp:1.0 (python-app)"
build mb1 "$work/a1.log" -t myapp:1.0 "$app"
line="print('edited at $(date +%s)-$$')"
say "echo \"$line\" >> app.py"
echo "$line" >>"$app/app.py"
say "minibuild build -t myapp:1.1 (python-app, app.py changed)"
build mb1 "$work/a2.log" -t myapp:1.1 "$app"
say "minibuild images"
mb1 images
cached=$(result "$work/a2.log" steps_cached)
total=$((cached + $(result "$work/a2.log" steps_built)))
first=$(jq -r 'select(.event == "step" and .status == "running") | .instruction' "$work/a2.log" | head -n 1)
line1="reuse within a project: $cached of $total steps cached, only $first and after rebuilt"

# --- (2) across images ----------------------------------------------------
say "minibuild build -t app-b:1.0 (examples/app-b: python-app's first steps, then its own)"
build mb1 "$work/b1.log" -t app-b:1.0 "$here/app-b"
say "minibuild explain myapp:1.1 app-b:1.0"
mb1 explain myapp:1.1 app-b:1.0
say "minibuild df -v"
mb1 df -v
mb1 df -v --format json >"$work/df.json"
ida=$(mb1 inspect -f '{{.Id}}' myapp:1.1)
idb=$(mb1 inspect -f '{{.Id}}' app-b:1.0)
shared=$(jq --arg a "$ida" --arg b "$idb" '[.layers[] | select((.images | index($a)) and (.images | index($b)))]
	| "\(length) \(map(.size) | add // 0)"' -r "$work/df.json")
unique_b=$(jq --arg b "$idb" -r '.images[] | select(.id == $b) | .unique' "$work/df.json")
line2="reuse across images: app-b reused $(result "$work/b1.log" steps_cached) steps; df: ${shared%% *} layers ($(human "${shared#* }")) shared, stored once; app-b alone adds $(human "$unique_b")"

# --- (3) across hosts -----------------------------------------------------
# A registry on a free 127.0.0.1 port, configured as test/e2e's startRegistry does.
start_registry() {
	for _ in 1 2 3 4 5 6 7 8; do
		port=$(awk -v s="$$" 'BEGIN { srand(); srand(srand() + s); print 20000 + int(rand() * 40000) }')
		cat >"$work/registry.yml" <<-EOF
			version: 0.1
			log:
			  level: info
			  accesslog:
			    disabled: false
			storage:
			  filesystem:
			    rootdirectory: $work/registry
			http:
			  addr: 127.0.0.1:$port
		EOF
		docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
		reg_pid=$!
		tries=0
		while [ "$tries" -lt 100 ]; do
			tries=$((tries + 1))
			if grep -q "listening on 127.0.0.1:$port" "$work/registry.log"; then
				reg=127.0.0.1:$port
				return 0
			fi
			kill -0 "$reg_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill "$reg_pid" 2>/dev/null || true
		wait "$reg_pid" 2>/dev/null || true
		reg_pid=
	done
	echo "demo.sh: docker-registry did not start:" >&2
	cat "$work/registry.log" >&2
	return 1
}
start_registry
say "host 1 pushes busybox, app-a and app-b to $reg, and exports app-a's cache (--cache-to)"
mb1 push busybox:latest "$reg/demo/busybox:latest"
mb1 push myapp:1.1 "$reg/demo/app-a:1.1"
mb1 push app-b:1.0 "$reg/demo/app-b:1.0"
build mb1 "$work/a3.log" -t myapp:1.1 --cache-to "type=registry,ref=$reg/demo/cache:app-a,mode=max" "$app"

say "host 2 (a fresh --root) pulls app-a, then app-b"
mb2 pull "$reg/demo/app-a:1.1"
mb2 pull "$reg/demo/app-b:1.0" 2>"$work/pull-b.log"
cat "$work/pull-b.log"
exists=$(grep -c ': already exists$' "$work/pull-b.log" || true)
pulled=$(grep -c ': pull complete$' "$work/pull-b.log" || true)
say "host 2 pulls the base, then builds app-a with --cache-from"
mb2 pull "$reg/demo/busybox:latest" >/dev/null
mb2 tag "$reg/demo/busybox:latest" busybox:latest
build mb2 "$work/a4.log" -t myapp:1.1 --cache-from "type=registry,ref=$reg/demo/cache:app-a" "$app"
line3="reuse across hosts: pull of app-b downloaded $pulled of $((exists + pulled)) layers; build of app-a on a fresh host ran $(result "$work/a4.log" steps_built) steps"

say "what was reused"
printf '%s\n' "$line1" "$line2" "$line3"
