#!/usr/bin/env bash
# EDEKs re-wrapped per second by `cmkfs key rotate` on each provider (issue 7's benchmark):
# N files (default 100000) created through a live mount, then one rotation of the mounted volume.
# Providers: the embedded KMS, `cmkfs-kms` over a socket, a SoftHSM2 token (PKCS#11).
# Not part of `swift test`. Run as root. Usage: bench/rotate-rate.sh [N] [providers...]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/opt/swift/usr/bin"
N=${1:-100000}
shift || true
PROVIDERS=${*:-embedded socket pkcs11}
swift build -c release --scratch-path .build-release >/dev/null
BIN="$PWD/.build-release/release"
WORK=$(mktemp -d /var/tmp/cmkfs-rotate.XXXXXX)
KMS_PID=
cleanup() {
  mountpoint -q "$WORK/mnt" 2>/dev/null && { "$BIN/cmkfs" unmount "$WORK/mnt" >/dev/null 2>&1 || fusermount3 -u -z "$WORK/mnt"; }
  [ -n "$KMS_PID" ] && kill "$KMS_PID" 2>/dev/null || true
  chattr -R -a "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
printf '%-10s %8s %10s %12s\n' provider files seconds "EDEKs/s"
for p in $PROVIDERS; do
  rm -rf "$WORK/vol"; mkdir -p "$WORK/mnt"
  ACCESS=()
  case $p in
    embedded) "$BIN/cmkfs" init "$WORK/vol" --kms-dir "$WORK/kms" >/dev/null; ACCESS=(--kms-dir "$WORK/kms") ;;
    socket)
      "$BIN/cmkfs-kms" serve --socket "$WORK/kms.sock" --state "$WORK/kms-state" >"$WORK/kms.log" 2>&1 &
      KMS_PID=$!
      for _ in $(seq 100); do [ -S "$WORK/kms.sock" ] && break; sleep 0.05; done
      "$BIN/cmkfs" init "$WORK/vol" --kms socket --kms-socket "$WORK/kms.sock" >/dev/null ;;
    pkcs11)
      mkdir -p "$WORK/hsm/tokens"
      printf 'directories.tokendir = %s/hsm/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$WORK" > "$WORK/hsm/softhsm2.conf"
      export SOFTHSM2_CONF="$WORK/hsm/softhsm2.conf"
      softhsm2-util --init-token --free --label bench --so-pin 12345678 --pin 4321 >/dev/null
      echo 4321 > "$WORK/hsm/pin"; chmod 600 "$WORK/hsm/pin"
      "$BIN/cmkfs" init "$WORK/vol" --kms pkcs11 --pkcs11-module /usr/lib/softhsm/libsofthsm2.so --token bench \
        --pin-file "$WORK/hsm/pin" >/dev/null
      ACCESS=(--pin-file "$WORK/hsm/pin") ;;
  esac
  "$BIN/cmkfs" mount "$WORK/vol" "$WORK/mnt" "${ACCESS[@]}" >/dev/null
  python3 - "$WORK/mnt" "$N" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for d in range(100): os.makedirs(f"{root}/d{d}", exist_ok=True)
for i in range(n): os.close(os.open(f"{root}/d{i % 100}/f{i}", os.O_CREAT | os.O_WRONLY, 0o644))
PY
  "$BIN/cmkfs" key rotate "$WORK/vol" "${ACCESS[@]}" --json > "$WORK/rotate.json"
  python3 - "$p" "$WORK/rotate.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
print(f"{sys.argv[1]:<10} {r['rewrapped']:>8} {r['seconds']:>10.2f} {r['per_second']:>12.0f}")
PY
  "$BIN/cmkfs" unmount "$WORK/mnt" >/dev/null
  if [ -n "$KMS_PID" ]; then kill "$KMS_PID"; wait "$KMS_PID" 2>/dev/null || true; KMS_PID=; fi
  chattr -R -a "$WORK/vol" 2>/dev/null || true
done
