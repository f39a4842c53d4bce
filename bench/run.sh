#!/bin/bash
# bench/run.sh — minibuild's own speed figures, run by `make bench`:
#   1. no-op rebuild of examples/python-app (warm)            aim < 50 ms
#   2. no-op rebuild over a 20,000-file context (warm re-hash) aim < 100 ms
#   3. per-step overhead of a trivial RUN (20 × RUN true, --no-cache,
#      minus the same build with no RUN, divided by 20)        aim < 30 ms
# Everything lives under .bench/own (git-ignored; bench/side.sh uses .bench/side).
#
# Environment: MINIBUILD (binary, default bin/minibuild), BENCH_DIR (default
# .bench/own), BENCH_RUNS (hyperfine runs, default 20).
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$PWD
mb=${MINIBUILD:-$repo/bin/minibuild}
work=${BENCH_DIR:-$repo/.bench/own}
runs=${BENCH_RUNS:-20}
root=$work/root

for tool in hyperfine awk; do
	command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install -y $tool)" >&2; exit 1; }
done
[ -x "$mb" ] || { echo "bench: $mb not built (make build)" >&2; exit 1; }

rm -rf "$work"
mkdir -p "$work"

# quiet_build CONTEXT ARGS... — a build whose output is only the image id.
quiet_build() {
	local ctx=$1
	shift
	"$mb" build --root "$root" --progress=quiet "$@" "$ctx" >/dev/null
}

# median_ms CSV [ROW] — the median (seconds in hyperfine's CSV) of a row, in ms.
median_ms() {
	awk -F, -v row="${2:-1}" 'NR == row + 1 { printf "%.1f", $4 * 1000 }' "$1"
}

echo "== preparing: busybox base, python-app, 20,000-file context" >&2
mkdir -p "$work/base"
cp examples/base/Dockerfile "$work/base/"
examples/base/prepare.sh "$work/base/rootfs" 2>/dev/null
quiet_build "$work/base" -t busybox:latest

cp -a examples/python-app "$work/app"
quiet_build "$work/app" -t myapp:bench

# 100 directories × 200 files of distinct small content.
ctx20k=$work/ctx20k
mkdir -p "$ctx20k"
awk -v dir="$ctx20k" 'BEGIN {
	for (d = 0; d < 100; d++) {
		sub_dir = sprintf("%s/pkg%03d", dir, d)
		system("mkdir -p " sub_dir)
		for (f = 0; f < 200; f++) {
			p = sprintf("%s/file%03d.txt", sub_dir, f)
			printf "package %d file %d\n%s\n", d, f, sprintf("%0*d", 64 + (d * 200 + f) % 512, d * 200 + f) > p
			close(p)
		}
	}
}'
printf 'FROM busybox\nCOPY . /src\n' >"$ctx20k/Dockerfile"
start=$(date +%s%N)
quiet_build "$ctx20k" -t ctx20k:bench
cold_ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "   20,000-file context: cold build ${cold_ms} ms" >&2

steps=$work/steps
mkdir -p "$steps"
printf 'FROM busybox\n' >"$steps/Dockerfile.run0"
{ printf 'FROM busybox\n'; for i in $(seq 20); do printf 'RUN true\n'; done; } >"$steps/Dockerfile.run20"

echo "== 1. no-op rebuild of examples/python-app" >&2
hyperfine -N --warmup 3 --runs "$runs" --export-csv "$work/noop.csv" \
	-n "python-app no-op" "$mb build --root $root --progress=quiet -t myapp:bench $work/app"

echo "== 2. warm re-hash of a 20,000-file context (no-op rebuild)" >&2
hyperfine -N --warmup 3 --runs "$runs" --export-csv "$work/ctx20k.csv" \
	-n "20k-file context no-op" "$mb build --root $root --progress=quiet -t ctx20k:bench $ctx20k"

echo "== 3. per-step overhead of RUN true (--no-cache, 20 steps vs 0)" >&2
hyperfine -N --warmup 1 --runs "$(( runs / 2 > 3 ? runs / 2 : 3 ))" --export-csv "$work/steps.csv" \
	-n "20 x RUN true" "$mb build --root $root --progress=quiet --no-cache -f $steps/Dockerfile.run20 $steps" \
	-n "0 x RUN" "$mb build --root $root --progress=quiet --no-cache -f $steps/Dockerfile.run0 $steps"

noop=$(median_ms "$work/noop.csv")
rehash=$(median_ms "$work/ctx20k.csv")
run20=$(median_ms "$work/steps.csv" 1)
run0=$(median_ms "$work/steps.csv" 2)
per_step=$(awk -v a="$run20" -v b="$run0" 'BEGIN { printf "%.1f", (a - b) / 20 }')

cat <<REPORT

minibuild bench ($(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)); medians
| measure                                         | result      | aim      |
|-------------------------------------------------|-------------|----------|
| no-op rebuild, examples/python-app              | ${noop} ms | < 50 ms  |
| no-op rebuild, 20,000-file context (re-hash)    | ${rehash} ms | < 100 ms |
| per-step overhead of RUN true (--no-cache)      | ${per_step} ms | < 30 ms  |
| (20,000-file context, cold build)               | ${cold_ms} ms |          |
REPORT
