#!/bin/sh
# build.sh — the one minibuild command a CI job runs: build CONTEXT, push it
# as IMAGE, reuse and refresh the instruction cache, write buildx's metadata.
# The GitHub Actions and GitLab CI recipes beside it call this script; the
# end-to-end test (test/e2e/ci_test.go) runs it as two runners.
#
# Parameters (environment):
#   IMAGE          the image to push, e.g. ghcr.io/me/app:abc123 (required)
#   CONTEXT        the build context (default: .)
#   DOCKERFILE     the Dockerfile (default: CONTEXT/Dockerfile)
#   CACHE_REF      a registry cache ref, e.g. ghcr.io/me/app:buildcache (optional)
#   CACHE_DIR      a local cache directory kept between runs, e.g. by
#                  actions/cache (optional)
#   METADATA_FILE  where --metadata-file writes (default: metadata.json)
#   PROGRESS       --progress mode (default: plain)
#   MINIBUILD      the binary (default: minibuild on PATH)
#   MINIBUILD_ROOT the store (default: ~/.local/share/minibuild)
#
# A missing cache (the first run, an expired one) is only a warning, and so is
# a registry cache that cannot be written (ignore-error=true): the cache never
# fails the build. Pushing the image can.
set -eu

: "${IMAGE:?set IMAGE to the image to push}"
context=${CONTEXT:-.}
metadata=${METADATA_FILE:-metadata.json}
mb=${MINIBUILD:-minibuild}

set -- --progress="${PROGRESS:-plain}" -t "$IMAGE" --push --metadata-file "$metadata"
if [ -n "${DOCKERFILE:-}" ]; then
	set -- "$@" -f "$DOCKERFILE"
fi
if [ -n "${CACHE_REF:-}" ]; then
	set -- "$@" --cache-from "type=registry,ref=$CACHE_REF" \
		--cache-to "type=registry,ref=$CACHE_REF,mode=max,ignore-error=true"
fi
if [ -n "${CACHE_DIR:-}" ]; then
	# Export into a new directory and swap it in afterwards: a local cache
	# only adds blobs, so exporting over the old one would grow it forever.
	rm -rf "$CACHE_DIR-new"
	set -- "$@" --cache-from "type=local,src=$CACHE_DIR" \
		--cache-to "type=local,dest=$CACHE_DIR-new,mode=max"
fi

"$mb" build "$@" "$context"

if [ -n "${CACHE_DIR:-}" ]; then
	rm -rf "$CACHE_DIR"
	mv "$CACHE_DIR-new" "$CACHE_DIR"
fi
# Under sudo, hand what the job keeps back to the invoking user, so that
# actions/cache and artifact uploads can read it.
if [ -n "${SUDO_UID:-}" ]; then
	chown -R "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$metadata" ${CACHE_DIR:+"$CACHE_DIR"}
fi
