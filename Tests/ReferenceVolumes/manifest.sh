#!/bin/sh
# Prints what a reference tree holds, the same way whichever binary made or reads it: type,
# permission bits, size and link count of files, symlink targets, then the sha256 of every file.
# Used by make.sh (the expected manifest) and by ReferenceVolumeTests (the mounted tree).
cd "$1" || exit 1
find . -mindepth 1 \( -type l -printf 'l %p -> %l\n' \) -o \( -type f -printf 'f %m %s %n %p\n' \) \
  -o \( -type d -printf 'd %m %p\n' \) -o -printf '%y %m %p\n' | LC_ALL=C sort || exit 1
find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum || exit 1
