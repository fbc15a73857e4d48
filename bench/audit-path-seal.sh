#!/usr/bin/env bash
# The cost of sealing audit paths (record format 2) on the open path: 20,000 open+read+close of
# small files (cache hits), binary A vs binary B, runs alternated.
# Usage: bench/audit-path-seal.sh BEFORE_CMKFS AFTER_CMKFS [runs] [opens]
set -euo pipefail
A=$1; B=$2; RUNS=${3:-5}; OPENS=${4:-20000}
W=$(mktemp -d /tmp/cmkfs-seal-bench.XXXX)
cleanup() { for b in "$A" "$B"; do "$b" unmount "$W/mnt" >/dev/null 2>&1 || true; done
            fusermount3 -u -z "$W/mnt" 2>/dev/null || true; chattr -R -f -a "$W" 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/mnt"
loop() {  # seconds for OPENS open+read+close of 100 files in one directory, from one process
  python3 - "$W/mnt/some-directory" "$OPENS" <<'PY'
import os, sys, time
d, total = sys.argv[1], int(sys.argv[2])
names = [os.path.join(d, "small-file-%03d.txt" % i) for i in range(100)]
t = time.perf_counter()
for i in range(total):
    fd = os.open(names[i % 100], os.O_RDONLY); os.read(fd, 4096); os.close(fd)
print("%.3f" % (time.perf_counter() - t))
PY
}
for run in $(seq 1 "$RUNS"); do
  for label in A B; do
    bin=$A; [ $label = B ] && bin=$B
    chattr -R -f -a "$W" 2>/dev/null || true; rm -rf "$W/vol" "$W/kms"
    "$bin" init "$W/vol" --kms-dir "$W/kms" >/dev/null
    "$bin" mount "$W/vol" "$W/mnt" --kms-dir "$W/kms" >/dev/null
    mkdir "$W/mnt/some-directory"
    for i in $(seq -f %03g 0 99); do echo "content $i" > "$W/mnt/some-directory/small-file-$i.txt"; done
    cat "$W"/mnt/some-directory/* > /dev/null   # every DEK cached: the runs measure cache hits
    s=$(loop)
    echo "$label run $run: $s s for $OPENS open+read+close ($(python3 -c "print(round($OPENS/$s))") /s)"
    "$bin" unmount "$W/mnt" >/dev/null
  done
done
