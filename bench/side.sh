#!/bin/bash
# bench/side.sh — minibuild side by side with Debian's buildah, in one run, over
# five generated scenarios (`make bench-side`; `make bench` runs it after
# bench/run.sh). Prints a markdown table of medians with minibuild/peer ratios.
#
#   S1 python-like app (deps RUN ~1 s, 23 MB)  cold, no-op, edit app.py, edit
#      requirements.txt, store after all runs; cross-host registry cache:
#      cold + export, fresh store + import, fresh store + import + app.py edited
#   S2 20,000 files, 200 MB, COPY . /src + RUN  cold, no-op, edit one file, store
#   S3 multi-stage (two ~1 s builder stages)     cold, no-op, edit a/main.c, store
#   S4 COPY app.py + 30 RUNs                     cold, no-op, edit app.py, store
#   S5 6,000 files (~71 MB), COPY . /src + RUN   cold, edit one file, store after
#      cold + 3 edits (and / context size), edit / `tar -c | gzip -1` of the files
#
# Builders: buildah (overlay driver, --layers, --isolation chroot, --pull=never,
# no --timestamp: its default, as a user runs it), minibuild, and optionally a
# second minibuild (MINIBUILD_BASE, e.g. a build of main, for before/after) and
# BuildKit (BUILDKIT_BIN, a directory holding buildkitd and buildctl; runc from
# PATH). Each builder gets the same busybox base image (built by minibuild from
# examples/base) and its own store; measures alternate between builders so that
# a noisy neighbour weighs on both. Before each timed run: the reset or edit,
# sync, and the context read once (page cache warm), untimed.
#
# Environment (knobs):
#   MINIBUILD        binary (default bin/minibuild)
#   MINIBUILD_BASE   a second minibuild binary: extra columns "base" and minibuild/base
#   BUILDKIT_BIN     directory with buildkitd and buildctl: extra column BuildKit
#   SIDE_SCENARIOS   comma list (default s1,s2,s3,s4,s5)
#   SIDE_RUNS        runs of cold, edit and cross-host measures (default 3)
#   SIDE_NOOP_RUNS   runs of no-op measures (default 10)
#   SIDE_S2_RUNS     cap on S2's cold and edit runs (default 3)
#   SIDE_QUIET_PCT   if set, wait before each run until the CPU is less busy than
#                    this percentage (at most SIDE_QUIET_MAX seconds, default 60)
#   SIDE_DIR         work directory (default .bench/side; git-ignored)
# Quick check: SIDE_RUNS=1 SIDE_NOOP_RUNS=2 SIDE_SCENARIOS=s1,s5 bench/side.sh
# `bench/side.sh table` prints the table of the last run again.
set -euo pipefail

self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${SIDE_DIR:-$repo/.bench/side}
export SIDE_DIR=$work
export MINIBUILD=${MINIBUILD:-$repo/bin/minibuild}
export MINIBUILD_BASE=${MINIBUILD_BASE:-}
export BUILDKIT_BIN=${BUILDKIT_BIN:-}
. "$repo/bench/side-lib.sh"
[ -z "$BUILDKIT_BIN" ] || . "$repo/bench/side-buildkit.sh"

case "${1:-}" in
_prep)
	shift
	prep "$@"
	exit 0
	;;
table)
	table "$work/results.txt"
	exit 0
	;;
"") ;;
*)
	sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2
	exit 2
	;;
esac

runs=${SIDE_RUNS:-3}
noop_runs=${SIDE_NOOP_RUNS:-10}
s2_runs=$((runs < ${SIDE_S2_RUNS:-3} ? runs : ${SIDE_S2_RUNS:-3}))
scenarios=${SIDE_SCENARIOS:-s1,s2,s3,s4,s5}
scenarios=${scenarios//,/ }

check_tools
builders=$(builders)
rm -rf "$work/store" "$work/ctx" "$work/csv" "$work/logs" "$work/results.txt"
mkdir -p "$work/csv" "$work/logs"
trap stop_daemons EXIT
write_meta
make_base
make_contexts $scenarios
case " $scenarios " in *" s1 "*) start_registry ;; *) [ -z "$BUILDKIT_BIN" ] || start_registry ;; esac
[ -z "$BUILDKIT_BIN" ] || start_buildkitd

start=$SECONDS
for s in $scenarios; do
	echo "== $s ($(describe "$s"))" >&2
	scenario "$s"
done
echo "== done in $((SECONDS - start)) s; results in $work/results.txt" >&2
table "$work/results.txt" | tee "$work/table.md"
