#!/usr/bin/env bash
# Opens per second on a cache hit, audit on vs. audit off (CMKFS_AUDIT_DISABLE_FOR_BENCHMARK=1,
# a benchmark-only switch). Usage: bench/audit-open-rate.sh [seconds-per-run] [runs]
# Needs root and a release build: swift build -c release
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-5}; RUNS=${2:-3}
BIN=$PWD/.build/release/cmkfs
W=$(mktemp -d /tmp/cmkfs-audit-bench.XXXX)
cleanup() { "$BIN" unmount "$W/mnt" >/dev/null 2>&1 || fusermount3 -u -z "$W/mnt" 2>/dev/null || true
            chattr -R -f -a "$W" 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/mnt"
"$BIN" init "$W/vol" --kms-dir "$W/kms" >/dev/null
rate() {  # opens/s of 100 small files, cycled, from one process
  python3 - "$W/mnt" "$SECONDS_PER_RUN" <<'PY'
import os, sys, time
d, secs = sys.argv[1], float(sys.argv[2])
names = [os.path.join(d, "f%d" % i) for i in range(100)]
n, end = 0, time.time() + secs
while time.time() < end:
    for p in names:
        os.close(os.open(p, os.O_RDONLY)); n += 1
print(int(n / secs))
PY
}
for mode in on off; do
  for run in $(seq 1 "$RUNS"); do
    if [ $mode = off ]; then export CMKFS_AUDIT_DISABLE_FOR_BENCHMARK=1; else unset CMKFS_AUDIT_DISABLE_FOR_BENCHMARK; fi
    "$BIN" mount "$W/vol" "$W/mnt" --kms-dir "$W/kms" >/dev/null
    for i in $(seq 0 99); do [ -e "$W/mnt/f$i" ] || echo x > "$W/mnt/f$i"; done
    cat "$W"/mnt/f* > /dev/null   # every DEK cached: the runs measure cache hits
    echo "audit $mode run $run: $(rate) opens/s"
    "$BIN" unmount "$W/mnt" >/dev/null
  done
done
unset CMKFS_AUDIT_DISABLE_FOR_BENCHMARK
"$BIN" audit verify "$W/vol" --kms-dir "$W/kms"
