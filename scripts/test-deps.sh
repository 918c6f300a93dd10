#!/usr/bin/env bash
# Installs what the tests need that a fresh machine lacks, and checks the
# peers that cannot be installed here. Idempotent: it installs nothing that
# is already there.
set -euo pipefail

need_apt=()
# The example filters are built by the tests: WAT with wabt's wat2wasm, C
# with clang for wasm32-wasi (lld links, wasi-libc and the wasm32 compiler
# runtime); readelf checks the binary is static.
command -v wat2wasm >/dev/null 2>&1 || need_apt+=(wabt)
command -v readelf >/dev/null 2>&1 || need_apt+=(binutils)
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
command -v wasm-ld >/dev/null 2>&1 || need_apt+=(lld)
# internal/cesdk decodes requests with the CloudEvents JavaScript SDK.
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
[ -d /usr/include/wasm32-wasi ] || [ -d /usr/lib/wasm32-wasi ] || need_apt+=(wasi-libc)
dpkg -s libclang-rt-dev-wasm32 >/dev/null 2>&1 || dpkg -l 'libclang-rt-*-dev-wasm32' 2>/dev/null | grep -q '^ii' || need_apt+=(libclang-rt-dev-wasm32)
if ((${#need_apt[@]})); then
	echo "test-deps: installing ${need_apt[*]} with apt-get"
	SUDO=""
	if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The JavaScript SDK at the version package-lock.json pins, installed again
# only when node_modules is missing or was installed from another lock file.
cesdk="$(dirname "$0")/../internal/cesdk"
if ! cmp -s "$cesdk/package-lock.json" "$cesdk/node_modules/.evr-installed-lock" 2>/dev/null; then
	echo "test-deps: npm ci in $cesdk"
	(cd "$cesdk" && npm ci --no-audit --no-fund --loglevel=error)
	cp "$cesdk/package-lock.json" "$cesdk/node_modules/.evr-installed-lock"
fi

# deploy/'s tests render and lint the Helm chart with a real helm at a pinned
# version, built from source (no prebuilt download): about 6 CPU-minutes cold,
# once per machine. Installed into GOBIN (or GOPATH/bin), where the tests look
# first; `go version -m` tells the version of a go-installed helm.
HELM_VERSION=v3.19.0
helm_bin="$(go env GOBIN)"
helm_bin="${helm_bin:-$(go env GOPATH | cut -d: -f1)/bin}/helm"
if ! go version -m "$helm_bin" 2>/dev/null | grep -qE "^[[:space:]]+mod[[:space:]]+helm\.sh/helm/v3[[:space:]]+${HELM_VERSION}[[:space:]]"; then
	echo "test-deps: installing helm ${HELM_VERSION} with go install (a few minutes)"
	go install "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
fi

if ! command -v moto_server >/dev/null 2>&1; then
	echo "test-deps: moto_server (the AWS emulator the EventBridge tests use) is not on PATH." >&2
	echo "test-deps: it is preinstalled on these machines and cannot be installed here (no PyPI);" >&2
	echo "test-deps: elsewhere: pip install 'moto[server]'. The tests fail without it." >&2
	exit 1
fi
