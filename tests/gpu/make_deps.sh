#!/usr/bin/env bash
# Makes the --deps prefix of device_check.sh on a Debian 12 build machine: downloads the Debian
# packages the engine, kernels and their tests need beyond a CUDA image (Abseil, GoogleTest,
# nlohmann-json, PCRE2) with `apt-get download` and extracts them under DIR (DIR/usr/include,
# DIR/usr/lib/x86_64-linux-gnu with the CMake configs). About 20 MB; copy DIR to the GPU machine.
#
# Usage: tests/gpu/make_deps.sh DIR
# The libraries are Debian 12's (glibc 2.36, libstdc++ of gcc 12): the GPU image's must be as new.
set -euo pipefail

DIR="${1:-}"
if [[ -z "$DIR" ]]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
PACKAGES=(libabsl-dev libabsl20220623 libgtest-dev libgmock-dev nlohmann-json3-dev libpcre2-dev
          libpcre2-8-0)
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
DEBS="$(mktemp -d)"
trap 'rm -rf "$DEBS"' EXIT
(cd "$DEBS" && apt-get download "${PACKAGES[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed')
for deb in "$DEBS"/*.deb; do
  dpkg-deb -x "$deb" "$DIR"
done
# The -dev packages' symlinks are relative, so the prefix works wherever it is copied.
echo "deps prefix in $DIR ($(du -sh "$DIR" | cut -f1)): ${PACKAGES[*]}"
