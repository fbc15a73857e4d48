#!/usr/bin/env bash
# Revocation latency over N trials (default 100): `cmkfs key revoke` while a process holds a file
# open. Reports p50/p99/max of (a) request → cache flushed, as `key revoke` measures it, and
# (b) request → the holder's first failed read. Not part of `swift test`. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/opt/swift/usr/bin"
TRIALS=${1:-100}
swift build -c release --scratch-path .build-release >/dev/null
CMKFS="$PWD/.build-release/release/cmkfs"
WORK=$(mktemp -d /var/tmp/cmkfs-revoke.XXXXXX)
cleanup() { mountpoint -q "$WORK/mnt" 2>/dev/null && fusermount3 -u -z "$WORK/mnt"; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/mnt"
"$CMKFS" init "$WORK/vol" --kms-dir "$WORK/kms" >/dev/null
"$CMKFS" mount "$WORK/vol" "$WORK/mnt" >/dev/null
echo "revocation drill" > "$WORK/mnt/f"
python3 - "$CMKFS" "$WORK" "$TRIALS" <<'PY'
import os, re, subprocess, sys, threading, time
cmkfs, work, trials = sys.argv[1], sys.argv[2], int(sys.argv[3])
vol, path = work + "/vol", work + "/mnt/f"
flushed, first_fail = [], []
for _ in range(trials):
    fd = os.open(path, os.O_RDONLY)
    os.pread(fd, 64, 0)
    stop = threading.Event(); failed_at = []
    def reader():
        while not stop.is_set():
            try:
                os.pread(fd, 64, 0)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            except OSError:
                failed_at.append(time.monotonic()); return
    t = threading.Thread(target=reader); t.start()
    start = time.monotonic()
    out = subprocess.run([cmkfs, "key", "revoke", vol], capture_output=True, text=True, check=True).stdout
    t.join(5); stop.set()
    m = re.search(r"flushed cache: ([0-9.]+) ms", out)
    flushed.append(float(m.group(1)))
    if failed_at: first_fail.append((failed_at[0] - start) * 1000)
    os.close(fd)
    subprocess.run([cmkfs, "key", "enable", vol], capture_output=True, check=True)
def pct(xs, p): xs = sorted(xs); return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]
for name, xs in [("request -> cache flushed (key revoke's own measure)", flushed),
                 ("request -> first failed read of an open file", first_fail)]:
    print(f"{name}: n={len(xs)} p50={pct(xs,50):.1f} ms p99={pct(xs,99):.1f} ms max={max(xs):.1f} ms")
PY
"$CMKFS" unmount "$WORK/mnt" >/dev/null
