#!/usr/bin/env bash
# Sequential 1 GiB write and read through cmkfs, gocryptfs (if installed) and the plain backing
# directory, in one run, printing MB/s and the ratio to plain. Not part of `swift test`.
# Usage: bench/seq-throughput.sh [SIZE_MIB]   (as root; builds cmkfs in release mode)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/opt/swift/usr/bin"
SIZE_MIB=${1:-1024}
swift build -c release --scratch-path .build-release >/dev/null
CMKFS="$PWD/.build-release/release/cmkfs"
WORK=$(mktemp -d /var/tmp/cmkfs-bench.XXXXXX)
cleanup() {
  for m in "$WORK"/mnt-*; do mountpoint -q "$m" 2>/dev/null && fusermount3 -u -z "$m" || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# dd prints "… copied, S s, R MB/s"; take bytes/seconds ourselves for a stable unit.
measure() { # name dir
  local dir=$1
  sync; echo 3 > /proc/sys/vm/drop_caches
  local t0 t1 t2
  t0=$(date +%s.%N)
  dd if=/dev/zero of="$dir/big" bs=1M count="$SIZE_MIB" conv=fsync status=none
  t1=$(date +%s.%N)
  sync; echo 3 > /proc/sys/vm/drop_caches
  local t1b; t1b=$(date +%s.%N)
  dd if="$dir/big" of=/dev/null bs=1M status=none
  t2=$(date +%s.%N)
  rm -f "$dir/big"
  python3 - "$SIZE_MIB" "$t0" "$t1" "$t1b" "$t2" <<'PY'
import sys
mib, t0, t1, t1b, t2 = int(sys.argv[1]), *map(float, sys.argv[2:])
print(f"{mib/(t1-t0)*1.048576:.0f} {mib/(t2-t1b)*1.048576:.0f}")
PY
}

declare -A W R
mkdir -p "$WORK/plain"
read -r W[plain] R[plain] < <(measure "$WORK/plain")

mkdir -p "$WORK/mnt-cmkfs"
"$CMKFS" init "$WORK/vol" --kms-dir "$WORK/kms" >/dev/null
"$CMKFS" mount "$WORK/vol" "$WORK/mnt-cmkfs" >/dev/null
read -r W[cmkfs] R[cmkfs] < <(measure "$WORK/mnt-cmkfs")
"$CMKFS" unmount "$WORK/mnt-cmkfs" >/dev/null

if command -v gocryptfs >/dev/null; then
  mkdir -p "$WORK/gcf" "$WORK/mnt-gocryptfs"
  echo bench-password > "$WORK/pw"
  gocryptfs -init -q -passfile "$WORK/pw" "$WORK/gcf" >/dev/null
  gocryptfs -q -passfile "$WORK/pw" "$WORK/gcf" "$WORK/mnt-gocryptfs"
  read -r W[gocryptfs] R[gocryptfs] < <(measure "$WORK/mnt-gocryptfs")
  fusermount3 -u "$WORK/mnt-gocryptfs"
fi

printf '%-10s %12s %12s %10s %10s\n' fs "write MB/s" "read MB/s" "w/plain" "r/plain"
for fs in plain cmkfs gocryptfs; do
  [ -n "${W[$fs]:-}" ] || continue
  printf '%-10s %12s %12s %10.2f %10.2f\n' "$fs" "${W[$fs]}" "${R[$fs]}" \
    "$(echo "${W[$fs]} / ${W[plain]}" | bc -l)" "$(echo "${R[$fs]} / ${R[plain]}" | bc -l)"
done
