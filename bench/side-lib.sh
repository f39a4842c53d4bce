# bench/side-lib.sh — the functions of bench/side.sh (sourced; it sets self,
# repo, work and the MINIBUILD, MINIBUILD_BASE and BUILDKIT_BIN variables).

fixed_mtime=1704067200 # the generated contexts' mtime (2024-01-01)

die() {
	echo "bench/side.sh: $*" >&2
	exit 1
}

# store_of B / ctx_of B S / bin_of B — where builder B keeps its store, its
# working copy of scenario S, and (minibuild and base) its binary.
store_of() { echo "$work/store/$1"; }
ctx_of() { echo "$work/ctx/$1/$2"; }
bin_of() { if [ "$1" = base ]; then echo "$MINIBUILD_BASE"; else echo "$MINIBUILD"; fi; }

# edit_file S — the one file an "edit" of scenario S appends a line to.
edit_file() {
	case "$1" in
	s1 | s4) echo app.py ;;
	s2) echo d100/f10000.txt ;;
	s3) echo a/main.c ;;
	s5) echo d17/f042.txt ;;
	esac
}

describe() {
	case "$1" in
	s1) echo "python-like app, ~1 s deps RUN writing 23 MB; cross-host registry cache" ;;
	s2) echo "20,000 files, 200 MB, COPY . /src + RUN" ;;
	s3) echo "multi-stage, two ~1 s builder stages" ;;
	s4) echo "COPY app.py + 30 RUNs" ;;
	s5) echo "6,000 files, COPY . /src + RUN: incremental edits" ;;
	*) die "unknown scenario $1 (s1 to s5)" ;;
	esac
}

check_tools() {
	local t missing=""
	for t in hyperfine buildah skopeo docker-registry awk tar gzip du; do
		command -v "$t" >/dev/null || missing="$missing $t"
	done
	[ -z "$BUILDKIT_BIN" ] || [ -x "$BUILDKIT_BIN/runc" ] || command -v runc >/dev/null || missing="$missing runc"
	[ -z "$missing" ] || die "missing:$missing (make deps-bench installs them on Debian)"
	[ "$(id -u)" = 0 ] || die "run as root (buildah's overlay store, minibuild's RUN)"
	[ -x "$MINIBUILD" ] || die "$MINIBUILD not built (make build)"
	[ -z "$MINIBUILD_BASE" ] || [ -x "$MINIBUILD_BASE" ] || die "MINIBUILD_BASE=$MINIBUILD_BASE is not executable"
	if [ -n "$BUILDKIT_BIN" ]; then
		[ -x "$BUILDKIT_BIN/buildkitd" ] && [ -x "$BUILDKIT_BIN/buildctl" ] ||
			die "BUILDKIT_BIN=$BUILDKIT_BIN holds no buildkitd and buildctl"
	fi
	return 0
}

# builders — the columns, peers first.
builders() {
	local b="buildah"
	[ -z "$BUILDKIT_BIN" ] || b="$b buildkit"
	[ -z "$MINIBUILD_BASE" ] || b="$b base"
	echo "$b minibuild"
}

# clean_tree DIR — unmount whatever a builder left mounted below DIR, remove it.
clean_tree() {
	local dir=$1 m
	case "$dir" in "$work"/*) ;; *) die "refusing to clean $dir" ;; esac
	for m in $(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r); do
		umount -l "$m" 2>/dev/null || true
	done
	rm -rf "$dir"
}

# make_base — the busybox base image (examples/base), built by minibuild and
# saved as a docker-archive that every builder's reset loads.
make_base() {
	local d=$work/base
	clean_tree "$d"
	mkdir -p "$d/ctx"
	cp "$repo/examples/base/Dockerfile" "$d/ctx/"
	"$repo/examples/base/prepare.sh" "$d/ctx/rootfs" 2>/dev/null
	"$MINIBUILD" --root "$d/store" build --progress=quiet -t busybox:latest "$d/ctx" >/dev/null
	"$MINIBUILD" --root "$d/store" save -o "$d/busybox.tar" busybox:latest
}

# make_contexts S... — the pristine contexts under $work/src, generated again
# only when the generators change (a stamp holds their hash).
make_contexts() {
	local s stamp bt=$work/bin/benchtool go=${GO:-go}
	command -v "$go" >/dev/null || go=/usr/local/go/bin/go
	mkdir -p "$work/bin" "$work/src"
	(cd "$repo" && "$go" build -o "$bt" ./bench/benchtool) || die "cannot build bench/benchtool"
	stamp=$(cat "$repo"/bench/benchtool/*.go "$repo/bench/gen-s5.sh" | sha256sum | cut -c1-16)
	for s in "$@"; do
		describe "$s" >/dev/null
		[ "$(cat "$work/src/$s.stamp" 2>/dev/null)" = "$stamp" ] && continue
		echo "== generating $s" >&2
		rm -rf "$work/src/$s" "$work/src/$s.stamp"
		if [ "$s" = s5 ]; then
			"$repo/bench/gen-s5.sh" "$work/src/s5"
			find "$work/src/s5" -exec touch -h -d "@$fixed_mtime" {} +
		else
			"$bt" contexts "$work/src" "$s"
		fi
		echo "$stamp" >"$work/src/$s.stamp"
	done
}

# fresh_ctx B S — builder B's working copy of scenario S, pristine again.
fresh_ctx() {
	local c
	c=$(ctx_of "$1" "$2")
	rm -rf "$c"
	mkdir -p "$(dirname "$c")"
	cp -a "$work/src/$2" "$c"
}

# reset_store B — an empty store holding only the base image.
reset_store() {
	local st
	st=$(store_of "$1")
	case "$1" in
	buildah)
		clean_tree "$st"
		mkdir -p "$st"
		skopeo copy -q "docker-archive:$work/base/busybox.tar" \
			"containers-storage:[overlay@$st/root+$st/run]docker.io/library/busybox:latest"
		;;
	buildkit) buildkitd_restart --fresh ;;
	*)
		clean_tree "$st"
		"$(bin_of "$1")" --root "$st" load -i "$work/base/busybox.tar" >/dev/null
		;;
	esac
}

# edit B S src|req — append a line that really changes the content.
edit() {
	local f
	if [ "$3" = req ]; then f=requirements.txt; else f=$(edit_file "$2"); fi
	f=$(ctx_of "$1" "$2")/$f
	case "$f" in
	*.c) echo "/* edit $(date +%s%N) */" >>"$f" ;;
	*) echo "# edit $(date +%s%N)" >>"$f" ;;
	esac
}

# prep B S ACTION — hyperfine's --prepare: reset and/or edit, then sync (so
# earlier writeback is not charged to the run), read the context once (warm
# page cache), and optionally wait for a quiet CPU.
prep() {
	local b=$1 s=$2
	case "$3" in
	reset) reset_store "$b" ;;
	edit-src) edit "$b" "$s" src ;;
	edit-req) edit "$b" "$s" req ;;
	reset+edit-src)
		reset_store "$b"
		edit "$b" "$s" src
		;;
	none) ;;
	*) die "unknown preparation $3" ;;
	esac
	sync
	find "$(ctx_of "$b" "$s")" -type f -print0 | xargs -0 -r cat >/dev/null
	[ -z "${SIDE_QUIET_PCT:-}" ] || quiet_wait
}

# quiet_wait — wait until the CPU is less than SIDE_QUIET_PCT % busy over one
# second, at most SIDE_QUIET_MAX (60) seconds.
quiet_wait() {
	local t0=$SECONDS a b
	while [ $((SECONDS - t0)) -lt "${SIDE_QUIET_MAX:-60}" ]; do
		a=$(awk '/^cpu /{ print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9; exit }' /proc/stat)
		sleep 1
		b=$(awk '/^cpu /{ print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9; exit }' /proc/stat)
		echo "$a $b" | awk -v pct="$SIDE_QUIET_PCT" '{ exit !(($3 - $1) * 100 < pct * ($4 - $2)) }' && return 0
	done
	echo "$(date +%T) gave up waiting for a quiet CPU" >>"$work/logs/contention.log"
}

# xhost_args B export|import — builder B's registry-cache flags for S1.
xhost_args() {
	local reg
	reg=$(cat "$work/registry/addr")
	case "$1:$2" in
	buildah:export) echo "--cache-to $reg/cache-buildah-s1 --tls-verify=false" ;;
	buildah:import) echo "--cache-from $reg/cache-buildah-s1 --tls-verify=false" ;;
	buildkit:export) echo "--export-cache type=registry,ref=$reg/cache-buildkit:s1,mode=max" ;;
	buildkit:import) echo "--import-cache type=registry,ref=$reg/cache-buildkit:s1" ;;
	*:export) echo "--cache-to type=registry,ref=$reg/cache-$1:s1,mode=max --insecure-registry $reg" ;;
	*:import) echo "--cache-from type=registry,ref=$reg/cache-$1:s1 --insecure-registry $reg" ;;
	esac
}

# build_cmd B S [export|import] — the timed command line (hyperfine -N).
build_cmd() {
	local b=$1 s=$2 st ctx extra=""
	st=$(store_of "$b")
	ctx=$(ctx_of "$b" "$s")
	[ -z "${3:-}" ] || extra=" $(xhost_args "$b" "$3")"
	case "$b" in
	buildah)
		echo "buildah --root $st/root --runroot $st/run --storage-driver overlay build" \
			"--layers --isolation chroot --pull=never$extra -t localhost/bench-$s:latest -f $ctx/Dockerfile $ctx"
		;;
	buildkit)
		echo "$BUILDKIT_BIN/buildctl --addr unix://$work/buildkit/buildkitd.sock build --frontend dockerfile.v0" \
			"--local context=$ctx --local dockerfile=$ctx --output type=image,name=localhost/bench-$s:latest$extra"
		;;
	*) echo "$(bin_of "$b") --root $st build --progress=quiet$extra -t bench-$s:latest $ctx" ;;
	esac
}

# record B S MEASURE VALUE — one line of results.txt.
record() { echo "$1 $2 $3 $4" >>"$work/results.txt"; }

# measure B S MEASURE RUNS WARMUP PREP [export|import] — hyperfine's median.
measure() {
	local b=$1 s=$2 m=$3 n=$4 warm=$5 p=$6 cmd csv=$work/csv/$1-$2-$3.csv v
	cmd=$(build_cmd "$b" "$s" "${7:-}")
	if ! hyperfine -N --style basic --runs "$n" --warmup "$warm" --export-csv "$csv" \
		--prepare "$self _prep $b $s $p" -n "$b $s $m" "$cmd" >>"$work/logs/hyperfine.log" 2>&1; then
		echo "$cmd" >>"$work/logs/failed.log"
		$cmd >>"$work/logs/failed.log" 2>&1 || true
		tail -15 "$work/logs/failed.log" >&2
		die "$b: $s $m failed (logs: $work/logs/hyperfine.log, failed.log)"
	fi
	v=$(awk -F, 'NR == 2 { print $4 }' "$csv")
	record "$b" "$s" "$m" "$v"
	printf '   %-8s %-12s %-10s %8.3f s\n' "$s" "$m" "$b" "$v" >&2
}

# store_mb B — the size of builder B's store in MB (du: what the disk holds).
store_mb() {
	local d
	if [ "$1" = buildkit ]; then d=$work/buildkit/root; else d=$(store_of "$1"); fi
	du -sk "$d" | awk '{ printf "%.1f", $1 / 1024 }'
}

# each S MEASURE ARGS... — measure, builder after builder.
each() {
	local b
	for b in $builders; do measure "$b" "$@"; done
}

# each_store S MEASURE — record every builder's store size.
each_store() {
	local b
	for b in $builders; do record "$b" "$1" "$2" "$(store_mb "$b")"; done
}

# scenario S — every measure of scenario S, for every builder.
scenario() {
	local s=$1 r=$runs b
	[ "$s" != s2 ] || r=$s2_runs
	for b in $builders; do fresh_ctx "$b" "$s"; done
	each "$s" cold "$r" 0 reset
	[ "$s" = s5 ] || each "$s" noop "$noop_runs" 1 none
	each "$s" edit_src "$r" 0 edit-src
	[ "$s" != s1 ] || each s1 edit_req "$r" 0 edit-req
	if [ "$s" != s5 ]; then
		each_store "$s" store
	else
		s5_store "$r"
		s5_targz
	fi
	[ "$s" != s1 ] || xhost
}

# xhost — S1 across hosts: a cold build exporting its cache to the registry,
# then fresh stores importing it, unchanged and with app.py edited.
xhost() {
	local b
	for b in $builders; do fresh_ctx "$b" s1; done
	each s1 export "$runs" 0 reset export
	each s1 import "$runs" 0 reset import
	each s1 import_edit "$runs" 0 reset+edit-src import
}

# s5_store RUNS — each store after a cold build and 3 one-file edits: what the
# edit measure left when it ran 3 times, else built again (untimed).
s5_store() {
	local b i
	for b in $builders; do
		if [ "$1" != 3 ]; then
			prep "$b" s5 reset
			$(build_cmd "$b" s5) >/dev/null 2>&1 || die "$b: S5 cold build failed"
			for i in 1 2 3; do
				edit "$b" s5 src
				$(build_cmd "$b" s5) >/dev/null 2>&1 || die "$b: S5 edit build failed"
			done
		fi
		record "$b" s5 store "$(store_mb "$b")"
	done
}

# s5_targz — the reference for S5's edit: `tar -c | gzip -1` over its files.
s5_targz() {
	local n=$((runs < 3 ? 3 : runs)) csv=$work/csv/ref-s5-targz.csv
	hyperfine --style basic --runs "$n" --warmup 1 --export-csv "$csv" -n "tar -c | gzip -1" \
		"tar -cf - -C $work/src/s5 . | gzip -1 >/dev/null" >>"$work/logs/hyperfine.log" 2>&1 ||
		die "tar | gzip of S5 failed"
	record ref s5 targz "$(awk -F, 'NR == 2 { print $4 }' "$csv")"
	record ref s5 ctx_mb "$(du -sk "$work/src/s5" | awk '{ printf "%.1f", $1 / 1024 }')"
}

# start_registry — Debian's docker-registry on a free loopback port, for S1's
# cross-host cache (and BuildKit's base image); stop_daemons stops it.
start_registry() {
	local d=$work/registry try port i
	clean_tree "$d"
	mkdir -p "$d"
	for try in 1 2 3; do
		port=$("$work/bin/benchtool" port)
		printf 'version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
			"$d/data" "$port" >"$d/config.yml"
		docker-registry serve "$d/config.yml" >"$d/registry.log" 2>&1 </dev/null &
		reg_pid=$!
		for i in $(seq 50); do
			kill -0 "$reg_pid" 2>/dev/null || break
			if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
				echo "127.0.0.1:$port" >"$d/addr"
				echo "== registry on 127.0.0.1:$port (pid $reg_pid)" >&2
				return 0
			fi
			sleep 0.1
		done
		kill "$reg_pid" 2>/dev/null || true
		wait "$reg_pid" 2>/dev/null || true
		reg_pid=""
	done
	die "docker-registry did not start (see $d/registry.log)"
}

stop_daemons() {
	if [ -n "${reg_pid:-}" ]; then
		kill "$reg_pid" 2>/dev/null || true
		wait "$reg_pid" 2>/dev/null || true
		reg_pid=""
	fi
	[ -z "$BUILDKIT_BIN" ] || buildkitd_stop
}

# table FILE — the markdown table of a results file.
table() {
	[ -f "$1" ] || die "no results in $1 (run bench/side.sh first)"
	cat "$work/meta.txt" 2>/dev/null || true
	echo
	awk -f "$repo/bench/side-table.awk" "$1"
}

# write_meta — the table's heading: machine, versions, run counts.
write_meta() {
	{
		printf 'bench/side.sh, %s, %s cores, Linux %s; medians of %s runs (no-op %s, S2 at most %s)\n' \
			"$(date -u +%Y-%m-%d)" "$(nproc)" "$(uname -r)" "$runs" "$noop_runs" "$s2_runs"
		printf 'buildah %s (overlay, --layers, --isolation chroot); minibuild %s' \
			"$(buildah version | awk '/^Version/ { print $2 }')" "$("$MINIBUILD" version 2>/dev/null | awk 'NR == 1 { print $2 }')"
		[ -z "$MINIBUILD_BASE" ] || printf '; base %s' "$("$MINIBUILD_BASE" version 2>/dev/null | awk 'NR == 1 { print $2 }')"
		[ -z "$BUILDKIT_BIN" ] || printf '; BuildKit %s (runc, overlayfs)' "$("$BUILDKIT_BIN/buildkitd" --version 2>/dev/null | awk '{ print $3 }')"
		echo
	} >"$work/meta.txt"
}
