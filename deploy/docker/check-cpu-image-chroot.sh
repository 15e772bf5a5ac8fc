#!/usr/bin/env bash
# Runs Dockerfile.cpu's two stages without Docker, each in a fresh Debian 12 root filesystem made
# by debootstrap (the minbase variant, close to what the debian:12 images hold). As root, on a
# Debian machine that reaches a Debian mirror and PyPI:
#   build stage    a git clone of this repository's HEAD, then build-cpu-image.sh /opt/r2serve
#                  (the Dockerfile's build lines, scripts/setup installing every package)
#   runtime stage  /opt/r2serve copied into the second root, the runtime stage's RUN lines read
#                  from Dockerfile.cpu and run with /bin/sh -c; then the server runs there as uid
#                  10001 with a tiny model mounted read-only at /model: /health, the image's
#                  HEALTHCHECK command and one completion must succeed, and SIGTERM must end it
#                  with status 0.
#   deploy/docker/check-cpu-image-chroot.sh [WORKDIR]      (WORKDIR: where the two roots go)
# The Debian mirror is the one this machine's apt uses; pip and curl in the roots trust what this
# machine trusts. Prints the time of each stage.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(realpath -m "${1:-$(mktemp -d "${TMPDIR:-/tmp}/r2serve-chroot.XXXXXX")}")
[ "$(id -u)" -eq 0 ] || { echo "check-cpu-image-chroot: run as root (debootstrap, chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null || apt-get install -y -qq --no-install-recommends debootstrap
mirror=$(grep -hoP '^URIs:\s*\K\S+(?=.*)' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1 ||
  true)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list)
[ -n "$mirror" ] || { echo "check-cpu-image-chroot: no Debian 12 mirror in /etc/apt" >&2; exit 1; }
mkdir -p "$work"
log() { echo "check-cpu-image-chroot: $*"; }

# Dockerfile.cpu's RUN lines of one stage, continuation lines joined, one a line.
stage_runs() {
  python3 - "$repo/deploy/docker/Dockerfile.cpu" "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
stage, runs, pending = None, [], ""
for line in text.splitlines():
    s = line.strip()
    if s.startswith("#") or (not pending and not s):
        continue
    if s.endswith("\\"):
        pending += s[:-1].strip() + " "
        continue
    s, pending = pending + s, ""
    word, _, rest = s.partition(" ")
    if word.upper() == "FROM":
        m = re.search(r"\bAS\s+(\S+)", rest, re.I)
        stage = m.group(1) if m else None
    elif word.upper() == "RUN" and stage == sys.argv[2]:
        runs.append(rest)
print("\n".join(runs))
PY
}

# Runs a command as root inside a root filesystem, in a private mount namespace with /proc and
# /dev, and a clean environment (as a Dockerfile's RUN has) plus the host's network settings: its
# DNS and the certificates it trusts (which pip uses there).
in_root() {
  local root=$1
  shift
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/host-certificates.crt"
  # shellcheck disable=SC2016 # expanded by the inner bash
  unshare -m bash -c 'mount -t proc proc "$0/proc" && mount --rbind /dev "$0/dev" && exec "$@"' \
    "$root" chroot "$root" env -i HOME=/root LANG=C.UTF-8 PIP_CERT=/etc/host-certificates.crt \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

# A fresh Debian 12 root in $1, unpacked from one debootstrap made once per WORKDIR.
make_root() {
  if [ ! -f "$work/minbase.tar" ]; then
    log "debootstrap bookworm (minbase) from $mirror"
    rm -rf "$work/minbase"
    debootstrap --variant=minbase bookworm "$work/minbase" "$mirror" > "$work/debootstrap.log" 2>&1 ||
      { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
    tar -C "$work/minbase" -cf "$work/minbase.tar" . && rm -rf "$work/minbase"
  fi
  rm -rf "$1" && mkdir -p "$1" && tar -C "$1" -xf "$work/minbase.tar"
}

# ---- build stage ---------------------------------------------------------------------------
build=$work/build
SECONDS=0
make_root "$build"
in_root "$build" sh -c 'apt-get update -qq &&
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends git ca-certificates' \
  > "$work/build-git.log" 2>&1
git clone -q --no-hardlinks "$repo" "$build/root/r2serve"
log "build stage: build-cpu-image.sh in a fresh Debian 12 root (log: $work/build.log)"
start=$SECONDS
if ! in_root "$build" /root/r2serve/deploy/docker/build-cpu-image.sh /opt/r2serve \
  > "$work/build.log" 2>&1; then
  tail -n 40 "$work/build.log" >&2
  exit 1
fi
log "build stage: $((SECONDS - start)) s; $(grep 'build-cpu-image: done' "$work/build.log")"

# ---- runtime stage ---------------------------------------------------------------------------
runtime=$work/runtime
make_root "$runtime"
cp -a "$build/opt/r2serve" "$runtime/opt/r2serve"                    # COPY --from=build
path=/opt/r2serve/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
while IFS= read -r line; do
  log "runtime stage: RUN $line"
  in_root "$runtime" env PATH="$path" /bin/sh -c "$line" \
    >> "$work/runtime.log" 2>&1 || { tail -n 20 "$work/runtime.log" >&2; exit 1; }
done < <(stage_runs runtime)

# The tiny model, written by the image's own binary, mounted read-only at /model.
rm -rf "$work/model"
in_root "$runtime" env PATH="$path" r2serve make-tiny-model --preset tiny --out /tmp/tiny-model > "$work/model.log" 2>&1
mv "$runtime/tmp/tiny-model" "$work/model"
mkdir -p "$runtime/model"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log "runtime stage: r2serve serve as uid 10001:10001 on port $port, /model read-only"
# shellcheck disable=SC2016 # expanded by the inner bash
unshare -m bash -c '
  root=$0 model=$1 port=$2 path=$3
  mount --bind "$model" "$root/model" && mount -o remount,bind,ro "$root/model"
  mount -t proc proc "$root/proc" && mount --rbind /dev "$root/dev"
  exec chroot --userspec=10001:10001 "$root" env -i PATH="$path" HOME=/nonexistent \
    r2serve serve --model /model --host 127.0.0.1 --port "$port" --shutdown-timeout 30
' "$runtime" "$work/model" "$port" "$path" > "$work/serve.log" 2>&1 &
server=$!
deadline=$((SECONDS + 120))
until curl -fsS -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null; do
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
  ((SECONDS < deadline)) || { log "no /health 200 within 120 s" >&2; kill "$server"; exit 1; }
  sleep 0.2
done
# The HEALTHCHECK command, run inside the image root as the image's user, on this port.
check=$(grep -A1 '^HEALTHCHECK' "$repo/deploy/docker/Dockerfile.cpu" | sed -n 's/^ *CMD //p' |
  sed "s/127.0.0.1:8000/127.0.0.1:$port/")
chroot --userspec=10001:10001 "$runtime" env -i PATH="$path" /bin/sh -c "$check"
log "runtime stage: HEALTHCHECK command passes"
answer=$(curl -fsS "http://127.0.0.1:$port/v1/completions" -H 'Content-Type: application/json' \
  -d '{"model": "model", "prompt": "Hello", "max_tokens": 4}')
grep -q '"finish_reason"' <<<"$answer" || { log "bad completion: $answer" >&2; exit 1; }
log "runtime stage: a completion answered: ${answer:0:120}..."
kill -TERM "$server"
status=0
wait "$server" || status=$?
((status == 0)) || { log "server exited with $status after SIGTERM" >&2; cat "$work/serve.log" >&2; exit 1; }
grep -q 'stopped' "$work/serve.log"
log "runtime stage: SIGTERM drained and exited 0"
log "all passed in ${SECONDS}s (roots in $work)"
