# The README's commands. `make check test` is what CI runs.
GO ?= go

.PHONY: all build test check demo fuzz bench

all: check test

build:
	$(GO) build -o bin/wgmesh .

# -race needs cgo (a C compiler); .ci/run installs one.
test:
	$(GO) test -race -count=1 ./...

check:
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

demo:
	$(GO) run . demo

fuzz:
	$(GO) test ./peerbook -run XXX -fuzz FuzzParse -fuzztime 30s

bench:
	$(GO) test -run XXX -bench . ./...
