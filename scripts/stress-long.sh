#!/usr/bin/env bash
# The long stress run, outside CI: scripts/stress-long.sh [HOURS] [WORKERS]
#
# Builds release, inits a volume in a temp dir, mounts it, and runs scripts/stress.py in chunks
# (CHUNK_MINUTES, default 10) with a fresh random seed each (or SEED=N for the first chunk), until
# HOURS (default 1, fractions allowed) have passed. After every chunk it unmounts, remounts and
# re-verifies the files of every chunk so far against their saved models. Stops at the first
# failure, printing the seed and the replay command. Everything is torn down (stress processes,
# mount, daemon, temp dir) on success, failure or Ctrl-C; on failure the logs (stress output,
# mount.log) are kept in $LOG_DIR.
#
#   CHUNK_MINUTES=10 SEED=123 CMKFS_SCRATCH=/work/.build-stress-release scripts/stress-long.sh 1 4
#   CMKFS_CONFIG=debug (default release) builds and runs the debug build; STRESS_ARGS="--no-sparse"
#   is passed to every stress.py chunk.
set -euo pipefail

HOURS=${1:-1}
WORKERS=${2:-4}
CHUNK_MINUTES=${CHUNK_MINUTES:-10}
REPO=$(cd "$(dirname "$0")/.." && pwd)
CONFIG=${CMKFS_CONFIG:-release}
if [ "$CONFIG" = release ]; then SCRATCH=${CMKFS_SCRATCH:-/work/.build-stress-release}; else SCRATCH=${CMKFS_SCRATCH:-/work/.build-stress}; fi
read -r -a EXTRA <<< "${STRESS_ARGS:-}"
export PATH="$PATH:/opt/swift/usr/bin"
PY=$(command -v python3)

TMP=$(mktemp -d /tmp/cmkfs-stress-long-XXXXXX)
LOG_DIR=${LOG_DIR:-$TMP-logs}
mkdir -p "$LOG_DIR"
VOL=$TMP/vol KMS=$TMP/kms MNT=$TMP/mnt STATE=$TMP/state
STRESS_PID=""
CMKFS=""

log() { printf '[stress-long %s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$LOG_DIR/summary.txt"; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$STRESS_PID" ] && kill -0 "$STRESS_PID" 2>/dev/null; then
        kill -TERM -- "-$STRESS_PID" 2>/dev/null || true
        sleep 1
        kill -KILL -- "-$STRESS_PID" 2>/dev/null || true
    fi
    if grep -qs " $MNT " /proc/self/mounts; then
        [ -n "$CMKFS" ] && timeout 30 "$CMKFS" unmount "$MNT" >/dev/null 2>&1 || true
        grep -qs " $MNT " /proc/self/mounts && { timeout 30 fusermount3 -u -z "$MNT" || true; }
        grep -qs " $MNT " /proc/self/mounts && { timeout 30 umount -l "$MNT" || true; }
    fi
    # The daemon, by the pid its lock file records, only if it is still our cmkfs mount.
    local pid
    pid=$(head -n1 "$VOL/mount.lock" 2>/dev/null || true)
    if [ -n "$pid" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "mount $VOL"; then
        sleep 2
        tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "mount $VOL" && kill -KILL "$pid" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ -f "$VOL/mount.log" ]; then cp "$VOL/mount.log" "$LOG_DIR/mount.log" || true; fi
    if grep -qs " $MNT " /proc/self/mounts; then
        echo "stress-long: $MNT is still mounted; leaving $TMP" >&2
    else
        chattr -R -f -a "$TMP" 2>/dev/null || true
        rm -rf "$TMP"
    fi
    if [ "$rc" -eq 0 ]; then rm -rf "$LOG_DIR"; else echo "stress-long: logs kept in $LOG_DIR" >&2; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

log "building $CONFIG in $SCRATCH"
swift build -c "$CONFIG" --package-path "$REPO" --scratch-path "$SCRATCH" >"$LOG_DIR/build.log" 2>&1 \
    || { tail -30 "$LOG_DIR/build.log"; exit 1; }
CMKFS=$(swift build -c "$CONFIG" --package-path "$REPO" --scratch-path "$SCRATCH" --show-bin-path)/cmkfs

mkdir -p "$MNT" "$STATE"
"$CMKFS" init "$VOL" --kms-dir "$KMS" >/dev/null
"$CMKFS" mount "$VOL" "$MNT" --kms-dir "$KMS"
log "volume $VOL mounted at $MNT; $HOURS h, $WORKERS workers, chunks of $CHUNK_MINUTES min"

# Runs stress.py in its own process group (so cleanup can stop all its workers), waits for it.
stress() {
    setsid "$PY" "$REPO/scripts/stress.py" "$@" >"$LOG_DIR/current.txt" 2>&1 &
    STRESS_PID=$!
    local rc=0
    wait "$STRESS_PID" || rc=$?
    STRESS_PID=""
    return "$rc"
}

CHUNK_SECS=$(awk "BEGIN { printf \"%d\", $CHUNK_MINUTES * 60 }")
START=$(date +%s)
END=$(( START + $(awk "BEGIN { printf \"%d\", $HOURS * 3600 }") ))
CHUNK=0 TOTAL_OPS=0
SEED=${SEED:-}
while [ "$(date +%s)" -lt "$END" ]; do
    CHUNK=$((CHUNK + 1))
    left=$(( END - $(date +%s) ))
    secs=$(( CHUNK_SECS < left ? CHUNK_SECS : left ))
    [ "$secs" -lt 10 ] && secs=10
    seed=${SEED:-$(( $(od -An -N4 -tu4 /dev/urandom) % 2147483647 + 1 ))}
    SEED=""
    log "chunk $CHUNK: seed $seed, $secs s"
    if ! stress --mount "$MNT" --workers "$WORKERS" --seconds "$secs" --seed "$seed" --state "$STATE" "${EXTRA[@]}"; then
        cat "$LOG_DIR/current.txt"
        log "FAILED in chunk $CHUNK, seed $seed, after $(( $(date +%s) - START )) s"
        exit 1
    fi
    cp "$LOG_DIR/current.txt" "$LOG_DIR/chunk-$CHUNK.txt"
    sed -n '/^stress: [0-9]* ops/p' "$LOG_DIR/current.txt" | tee -a "$LOG_DIR/summary.txt"
    ops=$(sed -n 's/^stress: \([0-9]*\) ops.*/\1/p' "$LOG_DIR/current.txt")
    TOTAL_OPS=$(( TOTAL_OPS + ops ))
    "$CMKFS" unmount "$MNT"
    "$CMKFS" mount "$VOL" "$MNT" --kms-dir "$KMS"
    if ! stress --verify --mount "$MNT" --state "$STATE"; then
        cat "$LOG_DIR/current.txt"
        log "FAILED: re-verify after the remount following chunk $CHUNK (seed $seed)"
        exit 1
    fi
    log "remounted; $(tail -n1 "$LOG_DIR/current.txt")"
done
ELAPSED=$(( $(date +%s) - START ))
log "PASSED: $CHUNK chunks, $TOTAL_OPS ops in $ELAPSED s (incl. remounts and verifies), $(( TOTAL_OPS / (ELAPSED > 0 ? ELAPSED : 1) )) ops/s overall"
