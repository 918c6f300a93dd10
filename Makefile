# vmware-event-router
#
#   make binary     build ./bin/vmware-event-router (static, version from git)
#   make test       everything CI runs: tools, go vet, all tests with -race
#   make check      gofmt, go vet, golangci-lint (pinned)
#   make bench      micro benchmarks (go test -bench)
#   make bench-e2e  end-to-end benchmark against the simulator
#   make image      the container image (needs a Docker engine)

GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT      ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS     := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
IMAGE       ?= vmware-event-router:$(VERSION)
GOLANGCI    := github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0
TEST_FLAGS  ?= -race -count=1 -timeout 9m

.PHONY: all binary test test-deps vet check bench bench-e2e image static-check clean

all: binary

binary:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/vmware-event-router ./cmd/vmware-event-router

# static-check builds the binary exactly as the Dockerfile does and checks
# it has no dynamic section: the image is distroless/static.
static-check: binary
	@if readelf -d bin/vmware-event-router 2>/dev/null | grep -q 'Dynamic section'; then \
		echo "bin/vmware-event-router is dynamically linked"; exit 1; fi
	@echo "bin/vmware-event-router is static"

test-deps:
	@bash scripts/test-deps.sh

vet:
	$(GO) vet ./...

test: test-deps vet static-check
	$(GO) test $(TEST_FLAGS) ./...

check: vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) run $(GOLANGCI) run ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

bench-e2e: binary
	$(GO) run ./cmd/evr-bench -router bin/vmware-event-router

image:
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMAGE) .

clean:
	rm -rf bin
