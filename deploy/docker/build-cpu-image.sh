#!/usr/bin/env bash
# Builds what the CPU image holds, without Docker, on a clean Debian 12 machine (as root or a user
# with sudo): the RUN lines of Dockerfile.cpu's build stage, run in a fresh copy of the source tree
# (what the image's `COPY . .` gives it), installing r2serve into PREFIX. Ends by running the
# installed binary and printing how long it all took.
#   deploy/docker/build-cpu-image.sh [PREFIX]          PREFIX defaults to /opt/r2serve, as in the image
# tests/deploy/test_deploy.py checks that the lines between the two markers below are exactly the
# Dockerfile's RUN lines, in order.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
R2_PREFIX=$(realpath -m "${1:-/opt/r2serve}")
export R2_PREFIX
SECONDS=0

# The build context: every file git tracks or would track (git's ignore rules leave out what
# Dockerfile.cpu.dockerignore leaves out: build outputs, .venv, models).
src=$(mktemp -d "${TMPDIR:-/tmp}/r2serve-src.XXXXXX")
trap 'rm -rf "$src"' EXIT
(cd "$repo" && git ls-files -z --cached --others --exclude-standard |
  tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$src"
cd "$src"
echo "build-cpu-image: building in $src, installing into $R2_PREFIX"

# >>> Dockerfile.cpu build stage
scripts/setup
cmake --preset release
cmake --build build/release -j "$(nproc)" --target r2serve
install -D -m 0755 build/release/server/r2serve "$R2_PREFIX/bin/r2serve"
deploy/docker/runtime-packages.sh "$R2_PREFIX/bin/r2serve" > "$R2_PREFIX/runtime-packages.txt"
# <<< Dockerfile.cpu build stage

"$R2_PREFIX/bin/r2serve" serve --help > /dev/null
echo "build-cpu-image: $R2_PREFIX/bin/r2serve works; runtime packages:" \
  "$(tr '\n' ' ' < "$R2_PREFIX/runtime-packages.txt")"
echo "build-cpu-image: done in ${SECONDS}s"
