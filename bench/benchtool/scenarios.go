package main

import (
	"fmt"
	"path/filepath"
	"strings"
)

// base is the FROM of every scenario: a local busybox image in each builder's
// store (bench/side.sh loads the same image into each).
const base = "busybox"

// pyModule is a python-looking source file of about lines lines.
func pyModule(r *rng, name string, lines int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\"\"\"%s: generated benchmark module.\"\"\"\nimport os\nimport json\n\n", name)
	for i := 0; i < lines/6; i++ {
		fmt.Fprintf(&b, "def %s_func_%d(x, y=%d):\n", name, i, r.between(1, 99))
		fmt.Fprintf(&b, "    # step %d: combine inputs\n", i)
		fmt.Fprintf(&b, "    z = x * %d + y\n", r.between(2, 50))
		fmt.Fprintf(&b, "    return json.dumps({'v': z, 'k': '%s-%d'})\n\n", name, i)
	}
	return b.String()
}

// writeAll writes name → content pairs under dir, in order.
func writeAll(dir string, files ...string) error {
	for i := 0; i+1 < len(files); i += 2 {
		if err := write(filepath.Join(dir, files[i]), []byte(files[i+1])); err != nil {
			return err
		}
	}
	return nil
}

// genS1: the python app. The deps RUN writes ~1 MB of text, its gzip and its
// md5 per "package": about 23 MB and a second of CPU, deterministic.
func genS1(dir string, r *rng) error {
	reqs := []string{"flask==3.0.0", "requests==2.31.0", "sqlalchemy==2.0.23", "pydantic==2.5.2",
		"gunicorn==21.2.0", "jinja2==3.1.2", "werkzeug==3.0.1", "click==8.1.7",
		"itsdangerous==2.1.2", "markupsafe==2.1.3", "urllib3==2.1.0", "idna==3.6",
		"certifi==2023.11.17", "charset-normalizer==3.3.2", "typing-extensions==4.8.0",
		"greenlet==3.0.1", "annotated-types==0.6.0", "pyyaml==6.0.1", "redis==5.0.1",
		"celery==5.3.6"}
	return writeAll(dir,
		"requirements.txt", strings.Join(reqs, "\n")+"\n",
		"app.py", pyModule(r, "app", 120)+"\nif __name__ == '__main__':\n    print(app_func_0(1))\n",
		"settings.py", pyModule(r, "settings", 30),
		"lib/__init__.py", "",
		"lib/models.py", pyModule(r, "models", 90),
		"lib/views.py", pyModule(r, "views", 90),
		"Dockerfile", `FROM `+base+`
ENV APP_ENV=production
WORKDIR /app
COPY requirements.txt .
RUN set -e; mkdir -p /deps; i=0; \
    while read -r pkg; do \
      case "$pkg" in ''|'#'*) continue;; esac; \
      i=$((i+1)); d="/deps/${pkg%%=*}"; mkdir -p "$d"; \
      seq $((i*7)) 3 $((i*7+400000)) > "$d/data.txt"; \
      gzip -6 -c "$d/data.txt" > "$d/data.gz"; \
      md5sum "$d/data.txt" > "$d/RECORD"; \
    done < requirements.txt; \
    echo "$i packages installed" > /deps/INSTALLED
COPY app.py settings.py ./
COPY lib/ ./lib/
CMD ["/bin/sh", "-c", "cat /deps/INSTALLED && ls /app"]
`)
}

// genS2: 20,000 files in 200 directories, log-normal sizes scaled to 200 MB
// in all; even files are slices of a word corpus (compressible), odd files
// random bytes. The edit target is d100/f10000.txt.
func genS2(dir string, r *rng) error {
	const dirs, perDir, target = 200, 100, 200 * 1000 * 1000
	raw := make([]int, dirs*perDir)
	total := 0
	for i := range raw {
		raw[i] = min(400_000, max(40, int(r.lognormal(8.6, 1.1))))
		total += raw[i]
	}
	scale := float64(target) / float64(total)
	words := strings.Fields("alpha build cache layer image docker file context stage copy run snapshot digest tar overlay mount")
	var c strings.Builder
	for i := 0; i < 400_000; i++ {
		if i > 0 {
			c.WriteByte(' ')
		}
		c.WriteString(words[r.between(0, len(words)-1)])
	}
	corpus := []byte(c.String())
	buf := make([]byte, 400_000*int(scale+1)+8)
	for i, s := range raw {
		size := max(16, int(float64(s)*scale))
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i/perDir))
		var name string
		var data []byte
		if i%2 == 0 {
			off := 0
			if size < len(corpus)-1 {
				off = r.between(0, len(corpus)-size-2)
			}
			name, data = fmt.Sprintf("f%05d.txt", i), corpus[off:min(len(corpus), off+size)]
		} else {
			name, data = fmt.Sprintf("f%05d.bin", i), buf[:size]
			r.fill(data)
		}
		if err := write(filepath.Join(sub, name), data); err != nil {
			return err
		}
	}
	return writeAll(dir, "Dockerfile", `FROM `+base+`
COPY . /src
RUN touch /src/d000/f00000.txt && wc -c /src/d000/f00000.txt > /src/STAMP
`)
}

// genS3: two independent builder stages of about a second each and a final
// stage copying from both. The edit target is a/main.c.
func genS3(dir string, r *rng) error {
	return writeAll(dir,
		"a/main.c", "/* component a */\nint main(void) { return 0; }\n",
		"a/util.h", "#define A_VERSION 1\n",
		"b/main.c", "/* component b */\nint main(void) { return 1; }\n",
		"b/util.h", "#define B_VERSION 1\n",
		"app.py", pyModule(r, "final", 30),
		"Dockerfile", `FROM `+base+` AS builder-a
WORKDIR /build
COPY a/ ./
RUN mkdir -p /out && seq 1 6000000 | gzip -9 > /out/a.gz && md5sum main.c util.h > /out/a.sum

FROM `+base+` AS builder-b
WORKDIR /build
COPY b/ ./
RUN mkdir -p /out && awk 'BEGIN{s=0; for(i=0;i<2200000;i++){s=(s*31+i)%1000003; if(i%10==0) print i, s}}' > /out/b.txt && md5sum main.c util.h > /out/b.sum

FROM `+base+`
COPY --from=builder-a /out/ /opt/a/
COPY --from=builder-b /out/ /opt/b/
COPY app.py /app/
CMD ["/bin/sh", "-c", "ls -l /opt/a /opt/b"]
`)
}

// genS4: COPY app.py, then thirty RUN steps. The edit target is app.py, so an
// edit re-runs all thirty.
func genS4(dir string, r *rng) error {
	var df strings.Builder
	df.WriteString("FROM " + base + "\nCOPY app.py /app/\nRUN mkdir -p /steps && echo step1 > /steps/01\n")
	for i := 2; i <= 30; i++ {
		fmt.Fprintf(&df, "RUN echo step%d > /steps/%02d\n", i, i)
	}
	df.WriteString("CMD [\"/bin/ls\", \"/steps\"]\n")
	return writeAll(dir, "app.py", pyModule(r, "many", 30), "Dockerfile", df.String())
}
