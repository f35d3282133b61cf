#!/usr/bin/env bash
# Set a machine up for pycontainerd: the system peers the tests and the demo
# drive (runc, containerd, docker-registry, btrfs-progs, busybox-static,
# protobuf-compiler, umoci, containernetworking-plugins), uv, and the workspace
# venv from the committed uv.lock.
#
# System packages are installed with apt-get only when missing and when running
# as root; otherwise the missing ones are listed. With CI=true a system peer that
# is still missing after that is an error, never a silent skip.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "setup: $*" >&2; }

# Debian package -> a file that proves it is installed.
declare -A SYSTEM_DEPS=(
  [runc]="runc"
  [containerd]="containerd ctr containerd-shim-runc-v2"
  [docker-registry]="docker-registry"
  [btrfs-progs]="mkfs.btrfs"
  [busybox-static]="busybox"
  [protobuf-compiler]="protoc"
  [umoci]="umoci"
  # CNI plugins for the CRI (Debian installs them in /usr/lib/cni, not on PATH)
  [containernetworking-plugins]="/usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/portmap"
)

have_binary() {
  command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" || -x "/usr/bin/$1" || -x "/sbin/$1" ]]
}

missing_packages() {
  local pkg bin
  for pkg in "${!SYSTEM_DEPS[@]}"; do
    for bin in ${SYSTEM_DEPS[${pkg}]}; do
      if ! have_binary "${bin}"; then
        echo "${pkg}"
        break
      fi
    done
    # busybox must be the static build: it is copied into container images.
    if [[ "${pkg}" == busybox-static ]] && command -v dpkg-query >/dev/null 2>&1 \
      && ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
      echo "${pkg}"
    fi
  done | sort -u
}

system_deps() {
  local missing
  missing="$(missing_packages | tr '\n' ' ')"
  missing="${missing% }"
  if [[ -z "${missing}" ]]; then
    return 0
  fi
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing system packages: ${missing}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086  # word splitting is intended
    apt-get install -y -qq ${missing}
    missing="$(missing_packages | tr '\n' ' ')"
    missing="${missing% }"
  fi
  if [[ -n "${missing}" ]]; then
    if [[ "${CI:-}" == true ]]; then
      log "missing system packages under CI: ${missing}"
      exit 1
    fi
    log "missing system packages (tests that need them will skip): ${missing}"
    log "install them with: apt-get install -y ${missing}"
  fi
}

uv_setup() {
  if ! command -v uv >/dev/null 2>&1 && [[ ! -x .uv-bootstrap/bin/uv ]]; then
    log "installing uv"
    if ! python3 -m pip install --quiet uv 2>/dev/null; then
      # An externally managed system Python refuses pip: use a private venv.
      python3 -m venv .uv-bootstrap
      .uv-bootstrap/bin/pip install --quiet uv
    fi
  fi
  local uv
  uv="$(command -v uv 2>/dev/null || echo .uv-bootstrap/bin/uv)"
  "${uv}" sync --locked
}

case "${1:-all}" in
  system) system_deps ;;
  uv) uv_setup ;;
  all)
    system_deps
    uv_setup
    ;;
  *)
    echo "usage: $0 [system|uv|all]" >&2
    exit 2
    ;;
esac
