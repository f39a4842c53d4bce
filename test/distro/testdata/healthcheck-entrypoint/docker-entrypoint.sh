#!/bin/sh
set -e
if [ "$1" = serve ]; then
	shift
	echo "serving $*"
	exec sleep infinity
fi
exec "$@"
