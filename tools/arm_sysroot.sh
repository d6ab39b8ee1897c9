#!/usr/bin/env bash
# Fill the cache the Arm emulation tests read (tests/compiler/test_arm_emulation.py): an arm64
# Python 3.11 in a copy of Debian's aarch64 cross sysroot, and the aarch64 wheels the runtime
# needs (iree-base-runtime 3.13.0, numpy, ml_dtypes, tokenizers), unpacked into one folder.
# Needs root (apt), qemu-user, libc6-arm64-cross and libstdc++6-arm64-cross.
# Usage: tools/arm_sysroot.sh [CACHE]   (default: $IREE_GLM_ARM_CACHE or ~/.cache/iree_glm/aarch64)
set -euo pipefail
CACHE=${1:-${IREE_GLM_ARM_CACHE:-$HOME/.cache/iree_glm/aarch64}}
[ -x "$CACHE/sysroot/usr/bin/python3.11" ] && [ -d "$CACHE/site/iree" ] && exit 0
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/debs" "$TMP/wheels"
cp -a /usr/aarch64-linux-gnu "$TMP/sysroot"
dpkg --add-architecture arm64
apt-get update -qq
(cd "$TMP/debs" && apt-get download -qq python3.11-minimal:arm64 libpython3.11-minimal:arm64 libpython3.11-stdlib:arm64 \
  libexpat1:arm64 zlib1g:arm64 libffi8:arm64 libssl3:arm64 libbz2-1.0:arm64 liblzma5:arm64 libsqlite3-0:arm64 libuuid1:arm64) \
  || { dpkg --remove-architecture arm64; exit 1; }
dpkg --remove-architecture arm64
apt-get update -qq
for d in "$TMP"/debs/*.deb; do dpkg -x "$d" "$TMP/sysroot"; done
pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 --python-version 3.11 -d "$TMP/wheels" \
  iree-base-runtime==3.13.0 numpy==2.4.6 ml_dtypes==0.7.0 tokenizers==0.23.3
mkdir -p "$TMP/site"
for w in "$TMP"/wheels/*.whl; do python3 -m zipfile -e "$w" "$TMP/site"; done
chmod +x "$TMP"/site/iree/_runtime_libs/iree-* 2>/dev/null || true
mkdir -p "$CACHE"
rm -rf "$CACHE/sysroot" "$CACHE/site"
mv "$TMP/sysroot" "$CACHE/sysroot"
mv "$TMP/site" "$CACHE/site"
