#!/bin/bash
# Makes one reference volume with a given cmkfs binary, so later binaries can be tested against
# what an earlier one wrote (ReferenceVolumeTests). Run as root:
#
#   Tests/ReferenceVolumes/make.sh BINARY NAME [init options...]
#
# writes Tests/ReferenceVolumes/NAME.tar.gz (vol/ and kms/: the embedded KMS's keystore with a
# test-only master key) and NAME.manifest (what the mounted tree must show). The binary is built
# from the commit the name records; see README.md beside this script for the ones committed.
set -euo pipefail
bin=$(realpath "$1"); name=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/cmkfs-ref-XXXXXX)
trap 'fusermount3 -u "$work/mnt" 2>/dev/null || true; chattr -R -a "$work" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/mnt"
"$bin" init "$work/vol" --kms-dir "$work/kms" "$@" >/dev/null
"$bin" mount "$work/vol" "$work/mnt" --kms-dir "$work/kms" >/dev/null
m=$work/mnt
printf 'hello, reference volume\n' > "$m/hello.txt"
: > "$m/empty"
python3 -c 'import sys; sys.stdout.buffer.write(bytes((i * 31 + 7) % 251 for i in range(10000)))' > "$m/blocks.bin"
python3 - "$m/sparse" <<'PY'
import sys
with open(sys.argv[1], "wb") as f:
    f.truncate(1 << 20)
    f.seek(500000)
    f.write(b"in the middle of a hole")
PY
mkdir -p "$m/dir/sub"
printf 'deep\n' > "$m/dir/sub/deep.txt"
chmod 700 "$m/dir/sub"
chmod 600 "$m/dir/sub/deep.txt"
long=$(printf 'n%.0s' $(seq 1 200))
printf 'a file with a 200-byte name\n' > "$m/dir/$long"
ln -s hello.txt "$m/link-short"
ln -s "$(printf 'd/%.0s' $(seq 1 1400))end" "$m/link-long"     # 2,803 bytes: the old direct form
ln "$m/hello.txt" "$m/hard"
mkfifo "$m/fifo"
python3 -c 'import os, sys; os.setxattr(sys.argv[1], "user.color", b"blue")' "$m/hello.txt"
mkdir "$m/ünïcödé ✓"
printf 'utf-8 names\n' > "$m/ünïcödé ✓/file"
sh "$here/manifest.sh" "$m" > "$here/$name.manifest"
"$bin" unmount "$m" >/dev/null
chattr -R -a "$work/vol" 2>/dev/null || true
rm -f "$work/vol/mount.log"
tar -C "$work" --numeric-owner -czf "$here/$name.tar.gz" vol kms
echo "wrote $here/$name.tar.gz and $name.manifest"
