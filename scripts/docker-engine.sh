#!/usr/bin/env bash
# The Docker engine that `sam local` needs, and the local base image it runs the functions on.
#
#   scripts/docker-engine.sh start   use a running engine as it is; where none runs on Debian as
#                                    root, install docker.io, qemu-user-static and binfmt-support
#                                    with apt, enable arm64 emulation and start dockerd (stopped by
#                                    `stop`); elsewhere, say what to install. Quiet when all is there.
#   scripts/docker-engine.sh image   build the base image for provided.al2023 (arm64, or
#                                    LAMBDA_ARCH=x86_64) from Debian packages, never pulled; prints
#                                    its name. Rebuilt only when this script changes.
#   scripts/docker-engine.sh stop    remove the containers SAM left from our images, and stop the
#                                    dockerd that `start` started (a running engine is left alone)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
run="$root/.tools/run"
arch=${LAMBDA_ARCH:-arm64}
case "$arch" in
  arm64) deb_arch=arm64 platform=linux/arm64 ;;
  x86_64) deb_arch=amd64 platform=linux/amd64 ;;
  *) echo "LAMBDA_ARCH must be arm64 or x86_64, not $arch" >&2; exit 2 ;;
esac
# The image name carries a digest of this script, so a changed recipe builds a new image.
recipe=$(sha256sum "$0" | cut -c1-12)
image="tokens-lambda-base:$arch-$recipe"

engine_up() { docker info >/dev/null 2>&1; }

debian_root() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -f /etc/debian_version ]; }

apt_install() {
  local log="$run/apt.log"
  echo "installing $* (apt-get)" >&2
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"; }
  } >"$log" 2>&1 || { cat "$log" >&2; return 1; }
}

# arm64 containers on another host: qemu-user-static's binfmt handler (its F flag lets
# containers use it), installed on Debian as root; elsewhere, say what is missing.
ensure_emulation() {
  [ "$arch" = arm64 ] && [ "$(uname -m)" != aarch64 ] || return 0
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && return 0
  if ! debian_root; then
    echo "arm64 containers need qemu-user-static's binfmt handler on this host (or LAMBDA_ARCH=x86_64)" >&2
    exit 1
  fi
  command -v update-binfmts >/dev/null && [ -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ] \
    || apt_install qemu-user-static binfmt-support
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
}

start() {
  mkdir -p "$run"
  if engine_up; then
    ensure_emulation
    return 0
  fi
  if ! debian_root; then
    cat >&2 <<'EOF'
No Docker engine answers. Install and start one (Docker Engine, or Docker Desktop), and for arm64
functions on an x86_64 host the qemu-user-static binfmt handler; then run this again.
EOF
    exit 1
  fi
  command -v dockerd >/dev/null || apt_install docker.io
  ensure_emulation
  # Without the userland proxy a published port answers only once the container listens, which
  # SAM relies on.
  dockerd --userland-proxy=false >"$run/dockerd.log" 2>&1 &
  echo $! >"$run/dockerd.pid"
  for _ in $(seq 1 120); do
    engine_up && return 0
    kill -0 "$(cat "$run/dockerd.pid")" 2>/dev/null || break
    sleep 0.5
  done
  echo "dockerd did not start; its log:" >&2
  tail -20 "$run/dockerd.log" >&2
  stop
  exit 1
}

image() {
  if docker image inspect "$image" >/dev/null 2>&1; then
    echo "$image"
    return 0
  fi
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  if ! dpkg --print-foreign-architectures | grep -qx "$deb_arch" && [ "$deb_arch" != "$(dpkg --print-architecture)" ]; then
    dpkg --add-architecture "$deb_arch"
    apt-get update -qq >/dev/null
  fi
  download() {
    (cd "$work" && chmod 777 . && apt-get download -qq \
      "libc6:$deb_arch" "libgcc-s1:$deb_arch" "busybox-static:$deb_arch" ca-certificates >/dev/null)
  }
  download || { apt-get update -qq >/dev/null && download; }
  mkdir -p "$work/rootfs"
  for deb in "$work"/*.deb; do dpkg -x "$deb" "$work/rootfs"; done
  (
    cd "$work/rootfs"
    # What a Lambda image has and SAM's rapid layer uses: a shell, mv/chmod/cp/rm, the task
    # and runtime folders, and the CA bundle update-ca-certificates would have made.
    mkdir -p bin var/task var/runtime var/rapid opt tmp etc/ssl/certs
    for tool in sh mv chmod cp rm mkdir ls cat env; do ln -sf busybox "bin/$tool"; done
    find usr/share/ca-certificates -name '*.crt' -exec cat {} + >etc/ssl/certs/ca-certificates.crt
    chmod 1777 tmp
    tar -cf ../rootfs.tar .
  )
  printf 'FROM scratch\nADD rootfs.tar /\nENV PATH=/bin:/usr/bin LANG=C.UTF-8\n' >"$work/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q --platform "$platform" -t "$image" "$work" >/dev/null 2>"$work/build.log" \
    || { cat "$work/build.log" >&2; exit 1; }
  echo "$image"
}

stop() {
  if engine_up; then
    # SAM names its invoke images after the base image: remove every container of ours.
    local containers=
    for repo in $(docker images --format '{{.Repository}}:{{.Tag}}' | grep '^tokens-lambda-base:' || true); do
      containers="$containers $(docker ps -aq --filter "ancestor=$repo" || true)"
    done
    # shellcheck disable=SC2086
    [ -z "${containers// /}" ] || docker rm -f $containers >/dev/null 2>&1 || true
  fi
  [ -f "$run/dockerd.pid" ] || return 0
  local pid
  pid=$(cat "$run/dockerd.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$run/dockerd.pid"
}

case "${1:-}" in
  start) start ;;
  image) image ;;
  stop) stop ;;
  *) echo "usage: $0 start|image|stop" >&2; exit 2 ;;
esac
