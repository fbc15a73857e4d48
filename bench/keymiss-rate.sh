#!/usr/bin/env bash
# Key-miss opens per second through a live mount whose master key is in a remote KMS (issue 19):
# N files (default 2000) of one byte created through the mount; then, for each reader count R
# (default 1 4 16), `cmkfs cache flush` and the kernel's caches dropped, and R threads that open,
# read and close every file once, so every open misses the key cache and costs one unwrap at the
# KMS. If opens were serialised behind one request the rate would not grow with R; if they keep
# R requests in flight it grows until the KMS (here on the same two cores) is the limit.
# Providers (PROVIDERS, default "vault aws-kms"): an OpenBao dev server and moto_server on loopback
# ports, as bench/rotate-rate.sh starts them (bench/providers.sh). Not part of `swift test`. Run as root.
# Usage: [CMKFS_BENCH_BIN=.build/debug] [PROVIDERS="vault aws-kms"] bench/keymiss-rate.sh [N] [readers...]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/providers.sh
export PATH="$PATH:/opt/swift/usr/bin"
N=${1:-2000}
shift || true
READERS=${*:-1 4 16}
PROVIDERS=${PROVIDERS:-vault aws-kms}
bench_setup keymiss
printf '%-10s %6s %8s %9s %10s %12s\n' provider files readers seconds "opens/s" "ms/open·R"
for p in $PROVIDERS; do
  rm -rf "$WORK/vol"; mkdir -p "$WORK/mnt"
  start_provider "$p"
  "$BIN/cmkfs" mount "$WORK/vol" "$WORK/mnt" "${ACCESS[@]}" >/dev/null
  python3 - "$WORK/mnt" "$N" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for d in range(20): os.makedirs(f"{root}/d{d}", exist_ok=True)
for i in range(n):
    with open(f"{root}/d{i % 20}/f{i}", "wb") as f: f.write(b"x")
PY
  for r in $READERS; do
    "$BIN/cmkfs" cache flush "$WORK/vol" >/dev/null
    sync; echo 3 > /proc/sys/vm/drop_caches
    python3 - "$WORK/mnt" "$N" "$r" "$p" <<'PY'
import os, sys, time, threading
root, n, readers, provider = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
paths = [f"{root}/d{i % 20}/f{i}" for i in range(n)]
def work(k):
    for path in paths[k::readers]:
        fd = os.open(path, os.O_RDONLY)
        assert os.read(fd, 1) == b"x"
        os.close(fd)
threads = [threading.Thread(target=work, args=(k,)) for k in range(readers)]
start = time.monotonic()
for t in threads: t.start()
for t in threads: t.join()
s = time.monotonic() - start
# ms per open times readers: the time one open took on average while R ran at once (flat when
# R requests really are in flight at once; growing with R when they wait on each other).
print(f"{provider:<10} {n:>6} {readers:>8} {s:>9.2f} {n / s:>10.0f} {1000 * s * readers / n:>12.2f}")
PY
  done
  stop_provider
done
