#!/bin/sh
# Real footage nobody here made, from Debian's opencv-doc package (FACTS.md, "Real footage"):
# fetch the .deb once into the cache, unpack the six clips, check them against SHA256SUMS.
# Usage: sh tests/footage/fetch.sh CACHE_DIR   (clips land in CACHE_DIR/clips)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cache=${1:?usage: fetch.sh CACHE_DIR}
mkdir -p "$cache"
cd "$cache"
if ! ls opencv-doc_*_all.deb >/dev/null 2>&1; then
    if ! apt-get download opencv-doc 2>/dev/null; then
        # Fresh machines have no package lists yet.
        if [ "$(id -u)" -eq 0 ]; then apt-get update -qq; else sudo apt-get update -qq; fi
        apt-get download opencv-doc
    fi
fi
deb=$(ls opencv-doc_*_all.deb | tail -n 1)
rm -rf unpacked clips.new
dpkg -x "$deb" unpacked
mkdir clips.new
data=unpacked/usr/share/doc/opencv-doc
cp "$data"/examples/data/Megamind.avi "$data"/examples/data/Megamind_bugy.avi \
    "$data"/examples/data/tree.avi "$data"/examples/data/vtest.avi clips.new/
gunzip -c "$data"/opencv4/html/box.mp4.gz > clips.new/box.mp4
gunzip -c "$data"/opencv4/html/cup.mp4.gz > clips.new/cup.mp4
(cd clips.new && sha256sum -c --quiet "$here/SHA256SUMS")
rm -rf unpacked clips
mv clips.new clips
touch clips/.verified  # what the footage tests look for: without it they skip
echo "footage: $(ls clips | wc -l) clips in $cache/clips"
