# minibuild — build, test, demo and benchmark.
#
# On a fresh Debian machine, as root, `make demo` and `make test` do all the
# set-up they need (they apt-get install the few Debian packages they use).

GO       ?= go
BIN      := bin/minibuild
MB       := $(CURDIR)/$(BIN)
BASE_DIR := examples/base
E2EFLAGS ?= -v
export PATH := /usr/local/go/bin:$(PATH)
# What `minibuild version` reports (the binary also reads vcs.revision from
# its build info when go stamps it).
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

# Debian packages each target needs (installed when missing and running as root).
DEMO_PKGS  := busybox-static docker-registry jq
TEST_PKGS  := busybox-static skopeo umoci docker-registry xz-utils procps slirp4netns jq ca-certificates debootstrap buildah
BENCH_PKGS := busybox-static hyperfine buildah skopeo docker-registry

.PHONY: all build test unit e2e distro demo base bench bench-side lint deps-demo deps-test deps-bench clean image fuzz

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/minibuild

# go vet, the unit tests of every package, then the end-to-end tests over the
# real binary and the real-distribution suite (those need root: namespaces,
# overlayfs, chown).
test: deps-test build
	$(GO) vet ./...
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /test/)
	@[ "$$(id -u)" = 0 ] || echo "WARNING: not root: the end-to-end tests will be skipped" >&2
	$(GO) test -count=1 -timeout 20m $(E2EFLAGS) ./test/e2e/
	$(GO) test -count=1 -timeout 60m -v ./test/distro/

unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /test/)

e2e: deps-test
	$(GO) test -count=1 -timeout 20m $(E2EFLAGS) ./test/e2e/

# distro: the real-distribution suite alone (a Debian bookworm base made with
# debootstrap, cached in $$MINIBUILD_DISTRO_CACHE; images compared with buildah).
distro: deps-test
	$(GO) test -count=1 -timeout 60m -v ./test/distro/

# fuzz: each fuzz target for FUZZTIME (their seed corpora run in `make test`
# as ordinary tests). Root for FuzzExtract (ownership, device nodes). A bare
# "context deadline exceeded" at the end with no failing input written is
# go1.26's fuzztime race (go.dev/issue/75804), not a finding.
FUZZTIME    ?= 60s
FUZZTARGETS := parser:FuzzParse buildctx:FuzzDockerignore snapshot:FuzzExtract archive:FuzzRead cache:FuzzKey
fuzz:
	@failed=""; for t in $(FUZZTARGETS); do \
		pkg=$${t%%:*}; fn=$${t#*:}; dir=$$pkg/testdata/fuzz/$$fn; log=$$(mktemp); \
		before=$$(ls $$dir 2>/dev/null | wc -l); echo "==> $$fn (./$$pkg, $(FUZZTIME))"; \
		{ $(GO) test -run XXX -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./$$pkg 2>&1; echo "rc=$$?"; } | tee $$log; \
		rc=$$(sed -n 's/^rc=//p' $$log | tail -1); after=$$(ls $$dir 2>/dev/null | wc -l); \
		if [ $$rc != 0 ] && [ $$before = $$after ] && grep -q "context deadline exceeded" $$log; then \
			echo "$$fn: the fuzztime deadline race (go.dev/issue/75804); no failing input"; \
		elif [ $$rc != 0 ]; then failed="$$failed $$fn"; fi; rm -f $$log; \
	done; [ -z "$$failed" ] || { echo "fuzzing found failures in:$$failed (inputs under */testdata/fuzz)"; exit 1; }

# base: the busybox base image, tagged busybox:latest in the store (so that
# `FROM busybox` resolves locally, without a registry).
base: deps-demo build
	$(BASE_DIR)/prepare.sh
	$(MB) build --progress=plain -t busybox:latest $(BASE_DIR)

# demo: the three kinds of layer reuse, one line each saying what was reused
# (examples/demo.sh): within a project (python-app built as myapp:1.0, app.py
# edited in a temporary copy, rebuilt as myapp:1.1: the steps before
# `COPY app.py` are CACHED); across images (examples/app-b reuses python-app's
# first steps, `df -v` shows their layers stored once); across hosts (a local
# docker-registry; a second --root pulls app-b without the layers it shares
# with app-a and builds app-a with --cache-from, running no step). The first
# host's store is $$MINIBUILD_ROOT when set, else a temporary one.
demo: deps-demo build
	MINIBUILD=$(MB) examples/demo.sh

# image: minibuild's own image, built with minibuild: FROM scratch, the static
# binary (with the version ldflags) and the host's Debian CA certificates,
# ENTRYPOINT ["/minibuild"]; tagged minibuild:VERSION and minibuild:latest in
# the store at MINIBUILD_ROOT (default ~/.local/share/minibuild). Layers are
# reproducible: SOURCE_DATE_EPOCH is the commit's time.
IMAGE_DIR := examples/image
image:
	@$(call ensure_pkgs,ca-certificates)
	@set -e; ctx=$$(mktemp -d); trap 'rm -rf "$$ctx"' EXIT; \
	tag=$$(printf '%s' '$(VERSION)' | tr -c 'A-Za-z0-9_.-' '_' | cut -c1-128); \
	epoch=$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct 2>/dev/null || echo 0)}; \
	cp $(IMAGE_DIR)/* /etc/ssl/certs/ca-certificates.crt "$$ctx/"; \
	echo "==> CGO_ENABLED=0 go build -o $$ctx/minibuild ./cmd/minibuild"; \
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o "$$ctx/minibuild" ./cmd/minibuild; \
	echo "==> minibuild build -t minibuild:$$tag -t minibuild:latest"; \
	SOURCE_DATE_EPOCH=$$epoch "$$ctx/minibuild" build --progress=plain \
		--build-arg VERSION='$(VERSION)' -t "minibuild:$$tag" -t minibuild:latest "$$ctx"

# bench: minibuild's own figures (bench/run.sh), then the side-by-side run
# against Debian's buildah over five generated scenarios (bench/side.sh; its
# header lists the knobs: SIDE_RUNS, SIDE_NOOP_RUNS, SIDE_SCENARIOS,
# MINIBUILD_BASE for a second minibuild, BUILDKIT_BIN). Everything under .bench/.
bench: deps-bench build
	bench/run.sh
	GO=$(GO) bench/side.sh

# bench-side: the side-by-side run alone.
bench-side: deps-bench build
	GO=$(GO) bench/side.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

deps-demo:
	@$(call ensure_pkgs,$(DEMO_PKGS))
deps-test:
	@$(call ensure_pkgs,$(TEST_PKGS))
deps-bench:
	@$(call ensure_pkgs,$(BENCH_PKGS))

clean:
	rm -rf bin .bench $(BASE_DIR)/rootfs

# ensure_pkgs installs the missing Debian packages (as root), or says what to install.
define ensure_pkgs
missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
if [ -n "$$missing" ]; then \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing:$$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "missing Debian packages:$$missing (apt-get install -y$$missing)" >&2; exit 1; fi; \
fi
endef
