# adclick — the front door. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
GOBIN ?= $(shell $(GO) env GOPATH)/bin
export PATH := $(GOBIN):$(PATH)

# Pinned code generators (local plugins; buf's remote plugins are not used).
BUF_VERSION              := v1.57.2
PROTOC_GEN_GO_VERSION    := v1.36.10
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
PROTOC_GEN_GATEWAY_VERSION := v2.27.3

BINARIES := router aggregator reducer adclick
TEST_TIMEOUT ?= 20m

.PHONY: help tools proto check-proto build run test lint bench clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

tools: ## install the pinned code generators into GOBIN
	$(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	$(GO) install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@$(PROTOC_GEN_GATEWAY_VERSION)

proto: ## regenerate gen/ from proto/ (needs `make tools`)
	rm -rf gen
	buf generate

check-proto: ## fail when gen/ is stale against proto/
	@tmp=$$(mktemp -d); buf generate --output $$tmp && \
	if diff -r $$tmp/gen gen >/dev/null; then echo "gen/ is up to date"; rm -rf $$tmp; \
	else diff -r $$tmp/gen gen | head -40; rm -rf $$tmp; echo "gen/ is stale: run 'make proto' and commit"; exit 1; fi

build: ## build router, aggregator, reducer, adclick into bin/
	@mkdir -p bin
	$(GO) build -o bin/ $(addprefix ./cmd/,$(BINARIES))

run: build ## start the whole cluster in one process (adclick dev)
	./bin/adclick dev

test: ## run every test with the race detector
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

lint: ## go vet and gofmt
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

bench: ## load the dev cluster (full speed, 50k/s, verified) and run the Go benchmarks; writes BENCH.md
	scripts/bench.sh

clean: ## remove build output and the dev data dir
	rm -rf bin data bench.out
