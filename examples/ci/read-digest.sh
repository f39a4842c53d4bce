#!/bin/sh
# read-digest.sh [METADATA_FILE] — what a later CI job does with the
# metadata a build job handed it: print REPOSITORY@DIGEST, the pushed image pinned
# by the manifest digest that the registry reports (skopeo inspect, docker
# buildx imagetools inspect). Needs jq.
set -eu

metadata=${1:-${METADATA_FILE:-metadata.json}}
name=$(jq -er '."image.name"' "$metadata")
digest=$(jq -er '."containerimage.digest"' "$metadata")
# image.name may list several comma-separated names: pin the first, by
# digest instead of its tag.
repo=${name%%,*}
case ${repo##*/} in
*:*) repo=${repo%:*} ;;
esac
echo "$repo@$digest"
