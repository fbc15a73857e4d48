#!/usr/bin/env bash
# Installs what cmkfs needs, builds it, and mounts a demo encrypted directory on the embedded
# simulated KMS. Run as root on Debian 12 from the repository root. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/opt/swift/usr/bin"
VOLUME=${CMKFS_DEMO_VOLUME:-/var/lib/cmkfs/demo-volume}
MOUNTPOINT=${CMKFS_DEMO_MOUNT:-/mnt/cmkfs-demo}

scripts/install-deps.sh
# Release build, then cmkfs and cmkfs-kms in /usr/local/bin, the mount(8) helper in
# /sbin/mount.fuse.cmkfs, the systemd units and the man pages (docs/operator-guide.md, "Install").
make install PREFIX=/usr/local
[ -e "$VOLUME/cmkfs.volume" ] || cmkfs init "$VOLUME"
mkdir -p "$MOUNTPOINT"
if grep -q " $MOUNTPOINT fuse.cmkfs " /proc/self/mounts; then
  echo "already mounted at $MOUNTPOINT"
else
  cmkfs mount "$VOLUME" "$MOUNTPOINT"
fi
cmkfs status "$VOLUME"
echo
echo "Write files under $MOUNTPOINT; the ciphertext lands in $VOLUME/data."
echo "Unmount with: cmkfs unmount $MOUNTPOINT"
