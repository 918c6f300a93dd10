#!/usr/bin/env bash
# Installs what the tests need that a fresh machine lacks, and checks the
# peers that cannot be installed here. Idempotent: it installs nothing that
# is already there.
set -euo pipefail

need_apt=()
command -v wat2wasm >/dev/null 2>&1 || need_apt+=(wabt)
command -v readelf >/dev/null 2>&1 || need_apt+=(binutils)
if ((${#need_apt[@]})); then
	echo "test-deps: installing ${need_apt[*]} with apt-get"
	SUDO=""
	if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v moto_server >/dev/null 2>&1; then
	echo "test-deps: moto_server (the AWS emulator the EventBridge tests use) is not on PATH." >&2
	echo "test-deps: it is preinstalled on these machines and cannot be installed here (no PyPI);" >&2
	echo "test-deps: elsewhere: pip install 'moto[server]'. The tests fail without it." >&2
	exit 1
fi
