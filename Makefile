# The README's commands. `make test` (which runs `check` first) is what CI runs.
GO ?= go

# Every GOOS/GOARCH of `make release`; `make check` builds them all.
PLATFORMS ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64 freebsd/amd64 freebsd/arm64

.PHONY: all build test check demo fuzz bench image release deb

all: test

build:
	$(GO) build -o bin/wgmesh .

# -race needs cgo (a C compiler); .ci/run installs one. Formatting and vet
# come first, so one command is the whole gate.
test: check
	$(GO) test -race -count=1 -timeout 25m ./...
	$(GO) test -count=1 -run 'TestGiBByteExact' ./netstack

check:
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	@for t in $(PLATFORMS); do \
		echo "GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) build ./..."; \
		GOOS=$${t%/*} GOARCH=$${t#*/} CGO_ENABLED=0 $(GO) build ./... || exit 1; \
	done
	GOOS=darwin $(GO) vet ./node ./hostnet
	GOOS=windows $(GO) vet $$($(GO) list ./... | grep -v /integration)

demo:
	$(GO) run . demo

# Every fuzz target, FUZZTIME each (go test -fuzz takes one package and one
# target per run). Findings land in PKG/testdata/fuzz/TARGET/: fix the bug,
# keep the file as a seed. A longer run: make fuzz FUZZTIME=60s
FUZZTIME ?= 7s
FUZZ_TARGETS = \
	peerbook:FuzzParse peerbook:FuzzImportWGQuick filter:FuzzParse etcdbook:FuzzAssemble \
	booksign:FuzzVerifySignature booksign:FuzzParseAllowedSigners \
	registry:FuzzRegistryAnswers registry:FuzzParseTXT registry:FuzzParseLabel registry:FuzzAnswer \
	proxy:FuzzSOCKS5Handshake proxy:FuzzSOCKS5UDPHeader proxy:FuzzHTTPTarget proxy:FuzzHTTPProxyRequest \
	meshdns:FuzzMeshDNSQuery meshdns:FuzzParseReverse \
	node:FuzzRelayPacket \
	netstack:FuzzGSOSplit netstack:FuzzGRO

fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t#*:}; \
		echo "fuzz ./$$pkg $$name ($(FUZZTIME))"; \
		$(GO) test ./$$pkg -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) || exit 1; \
	done

# Benchmarks, never timed tests. The pair scripts need root (network
# namespaces) and iperf3; scale.sh needs neither; see bench/README.md.
bench:
	$(GO) test -run XXX -bench Apply -benchtime 3x ./node
	$(GO) test -run XXX -bench Big -benchtime 5x ./peerbook
	bash bench/scale.sh
	bash bench/tun_pair.sh
	bash bench/netstack_pair.sh
	bash bench/rules_pair.sh
	$(GO) build -o bin/wgmesh . && $(GO) run ./bench/etcdfleet -wgmesh bin/wgmesh

# A FROM scratch image of a static binary, built from local files only.
IMAGE ?= wgmesh:latest
image:
	rm -rf bin/image && mkdir -p bin/image/rootfs/tmp && chmod 1777 bin/image/rootfs/tmp
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o bin/image/wgmesh .
	cp Dockerfile bin/image/
	docker build -t $(IMAGE) bin/image

# Reproducible archives for every PLATFORMS entry, with SHA256SUMS, in
# bin/release (packaging/release.sh says what is in them).
release:
	GO=$(GO) PLATFORMS="$(PLATFORMS)" OUT=bin/release sh packaging/release.sh

# bin/wgmesh_VERSION_ARCH.deb for DEB_ARCH (amd64 or arm64; default: the
# host's): binary, systemd units, sysusers entry, man page, completions.
DEB_ARCH ?= $(shell $(GO) env GOARCH)
deb:
	GO=$(GO) OUT=bin sh packaging/deb/build.sh $(DEB_ARCH)
