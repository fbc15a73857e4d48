#!/usr/bin/env bash
# Runs one libFuzzer target: fuzz/run.sh TARGET [SECONDS] [extra libFuzzer flags…]
#
# Builds the cmkfs-fuzz driver in release with -sanitize=fuzzer (CMKFS_FUZZ=1 makes Package.swift
# declare it) into /work/.build-fuzz-lf (or $CMKFS_FUZZ_BUILD), then fuzzes TARGET for SECONDS
# (default 60) starting from fuzz/corpus/TARGET/. New coverage-increasing inputs go to
# fuzz/out/TARGET/ (ignored by git; copy the interesting ones into the corpus), crashes and
# invariant violations to fuzz/crashes/ (also ignored). Targets: header, block, metadata-db,
# metadata-rows, audit-record, audit-segment, control, kms-server, kms-client (docs/fuzzing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/opt/swift/usr/bin"
target=${1:?usage: fuzz/run.sh TARGET [SECONDS] [libFuzzer flags…]}
seconds=${2:-60}
shift $(( $# >= 2 ? 2 : 1 ))
build=${CMKFS_FUZZ_BUILD:-/work/.build-fuzz-lf}

# -sanitize=fuzzer on every module (not only the driver's), so libFuzzer sees the coverage of
# the parsers themselves; only the cmkfs-fuzz product is built, so nothing else links libFuzzer.
CMKFS_FUZZ=1 swift build -c release --scratch-path "$build" --product cmkfs-fuzz \
    -Xswiftc -sanitize=fuzzer >&2
binary="$build/release/cmkfs-fuzz"

mkdir -p "fuzz/corpus/$target" "fuzz/out/$target" fuzz/crashes
# Inputs as large as the largest seed (a metadata database is 24 KiB), and at least 4 KiB
# (regression inputs may be larger: they are replayed, not a reason to mutate 64 KiB inputs).
max_len=$(find "fuzz/corpus/$target" -type f -name 'seed-*' -printf '%s\n' | sort -n | tail -1)
max_len=$(( ${max_len:-0} > 4096 ? max_len : 4096 ))
# A crash skips the harness's cleanup at exit: remove scratch directories of dead fuzz processes.
for dir in /dev/shm/cmkfs-fuzz.* "${TMPDIR:-/tmp}"/cmkfs-fuzz.*; do
    if [ -d "$dir" ] && ! kill -0 "${dir##*.}" 2>/dev/null; then rm -rf "$dir"; fi
done
# The Swift runtime's backtracer would take the crash signal before libFuzzer could save the input.
export SWIFT_BACKTRACE=enable=no
export CMKFS_FUZZ_TARGET="$target"
exec "$binary" "fuzz/out/$target" "fuzz/corpus/$target" \
    -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="fuzz/crashes/$target-" -print_final_stats=1 "$@"
