#!/usr/bin/env bash
# Prints the Debian packages that provide the shared libraries a binary loads, one a line, so a
# runtime image installs exactly those (the build stage has the -dev packages, the runtime stage
# only these). Fails when a library is missing or comes from no package (the runtime stage could
# not install it).
#   deploy/docker/runtime-packages.sh build/release/server/r2serve > runtime-packages.txt
set -euo pipefail
bin=${1:?usage: runtime-packages.sh BINARY}
[ -x "$bin" ] || { echo "runtime-packages: $bin is not an executable" >&2; exit 1; }

libs=$(ldd "$bin") || { echo "runtime-packages: ldd failed on $bin" >&2; exit 1; }
# The GPU driver's own libraries come from the host at run time (the NVIDIA container runtime
# mounts them); a build machine without a driver does not have them.
driver_libs='^\s*(libcuda\.so\.1|libnvidia-ml\.so\.1) => not found'
missing=$(grep 'not found' <<<"$libs" | grep -Ev "$driver_libs" || true)
if [ -n "$missing" ]; then
  echo "runtime-packages: $bin needs libraries that are not installed:" >&2
  echo "$missing" >&2
  exit 1
fi

status=0
packages=()
while read -r path; do
  real=$(readlink -f "$path")
  # Debian 12 merged /lib into /usr/lib; dpkg knows a file under the name its package shipped.
  owner=$(dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null || dpkg -S "$path" 2>/dev/null) || {
    echo "runtime-packages: $path ($real) belongs to no Debian package" >&2
    status=1
    continue
  }
  packages+=("${owner%%:*}")
done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3}' <<<"$libs")
((status == 0)) || exit 1
printf '%s\n' "${packages[@]}" | sort -u
