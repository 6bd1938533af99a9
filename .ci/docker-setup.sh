#!/usr/bin/env bash
# Prepare a real Docker engine for the `docker` test marker on a machine with no
# registry access: Debian's docker.io, a daemon without iptables/bridge (the CI
# kernel has neither), a base image made with debootstrap, and both edgelab images.
# Idempotent: every step is skipped when its result is already there.
#
# Usage: .ci/docker-setup.sh [VENV_BIN]      (default .venv/bin)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-.venv/bin}
BASE_IMAGE=${EDGELAB_BASE_IMAGE:-edgelab-base:bookworm}
DATA_DIR=${EDGELAB_DATA_DIR:-var}
LOG_DIR="$DATA_DIR/docker"
mkdir -p "$LOG_DIR"

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  echo "== installing docker.io and debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "== starting dockerd (log: $LOG_DIR/dockerd.log)"
  nohup dockerd --iptables=false --bridge=none >"$LOG_DIR/dockerd.log" 2>&1 &
  echo $! >"$LOG_DIR/dockerd.pid"
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { echo "dockerd did not come up; see $LOG_DIR/dockerd.log" >&2; exit 1; }
fi

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  echo "== building base image $BASE_IMAGE with debootstrap (a few minutes)"
  ROOTFS=$(mktemp -d /tmp/edgelab-rootfs.XXXXXX)
  trap 'rm -rf "$ROOTFS"' EXIT
  # libgomp1 is what llama.cpp's CPU backend links against; having it in the base
  # lets image builds skip apt entirely.
  debootstrap --variant=minbase --include=python3,python3-venv,libgomp1 \
    bookworm "$ROOTFS" >"$LOG_DIR/debootstrap.log" 2>&1 \
    || { tail -20 "$LOG_DIR/debootstrap.log" >&2; exit 1; }
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
  tar -C "$ROOTFS" -c . | docker import - "$BASE_IMAGE" >/dev/null
  rm -rf "$ROOTFS"
  trap - EXIT
fi

echo "== building edgelab images on $BASE_IMAGE"
"$BIN/edgelab" images build --base-image "$BASE_IMAGE"
