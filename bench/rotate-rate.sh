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
. bench/providers.sh
export PATH="$PATH:/opt/swift/usr/bin"
N=${1:-100000}
shift || true
PROVIDERS=${*:-embedded socket pkcs11 vault}
bench_setup rotate
printf '%-10s %8s %10s %12s\n' provider files seconds "EDEKs/s"
for p in $PROVIDERS; do
  rm -rf "$WORK/vol"; mkdir -p "$WORK/mnt"
  start_provider "$p"
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
  stop_provider
done
