# syntax=docker/dockerfile:1

# The image is built in two stages: a Go toolchain builds one static binary,
# and the final stage holds only that binary on distroless "static" (CA
# certificates, tzdata, /etc/passwd with the nonroot user, nothing else: no
# shell, no libc, no package manager).
#
#   make image                      # what the Makefile runs, with VERSION/COMMIT from git
#   docker build --build-arg VERSION=v1.2.3 --build-arg COMMIT=$(git rev-parse HEAD) \
#       -t vmware-event-router .
#
# `make static-check` builds the same binary with the same flags outside
# Docker and checks it is static, so CI can test this recipe's output without
# a container registry.

FROM golang:1.26 AS builder

# VERSION and COMMIT end up in the banner and `vmware-event-router version`;
# the .git directory is not in the build context (.dockerignore), so they come
# in as build arguments.
ARG VERSION=dev
ARG COMMIT=unknown

WORKDIR /src

# Modules first, in their own layer, so a source change does not download
# them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .

# CGO_ENABLED=0: no libc, so the binary runs on distroless/static (and
# scratch). -trimpath: no build machine paths in the binary or its panics.
# -buildvcs=false: VCS stamping would need .git, which is not in the context;
# the version comes from -X instead. -s -w: no symbol table or DWARF.
# -tags novcsim: no embedded simulator (the demo's vcsim stream), which
# production does not use; a vcsim entry is refused, naming the builds that
# have it.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -buildvcs=false -tags novcsim \
        -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
        -o /out/vmware-event-router ./cmd/vmware-event-router

FROM gcr.io/distroless/static-debian12:nonroot

COPY --from=builder /out/vmware-event-router /vmware-event-router

# 65532 is distroless's "nonroot" user and group. A numeric USER lets
# Kubernetes verify runAsNonRoot without reading the image's /etc/passwd; the
# manifest sets the same runAsUser.
USER 65532:65532

# The metrics server (/metrics, /stats, /livez, /readyz) listens on the
# address of the config's metrics entry; 8080 in the examples.
EXPOSE 8080

# The config is the file the Kubernetes Secret event-router-config provides
# (key event-router-config.json, mounted at /etc/vmware-event-router/).
ENTRYPOINT ["/vmware-event-router", "-config", "/etc/vmware-event-router/event-router-config.json"]
