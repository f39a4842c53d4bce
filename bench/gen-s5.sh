#!/bin/bash
# gen.sh DIR — the issue-11 incremental scenario: 6,000 files (60 dirs x 100), ~10 KB each
# (~60 MB, about half compressible like source code), `COPY . /src` + a RUN.
# Edit one file: echo "# edit $(date +%s%N)" >> DIR/d17/f042.txt
set -euo pipefail
dir=$1
rm -rf "$dir"; mkdir -p "$dir"
awk -v dir="$dir" 'BEGIN {
	srand(11)
	split("alpha beta gamma delta return func if else for range import package var const type struct", w, " ")
	for (d = 0; d < 60; d++) {
		sub_dir = sprintf("%s/d%02d", dir, d); system("mkdir -p " sub_dir)
		for (f = 0; f < 100; f++) {
			p = sprintf("%s/f%03d.txt", sub_dir, f); n = 0; s = ""
			while (n < 10240) {
				line = sprintf("%s %s %08x %s %d\n", w[int(rand()*16)+1], w[int(rand()*16)+1], int(rand()*4294967295), w[int(rand()*16)+1], int(rand()*100000))
				s = s line; n += length(line)
			}
			printf "%s", s > p; close(p)
		}
	}
}'
printf 'FROM busybox\nCOPY . /src\nRUN wc -c /src/d00/f000.txt > /count\n' > "$dir/Dockerfile"
