#!/usr/bin/env bash
# Prepare a real Docker engine for the `docker` test marker on a machine with no
# registry access: Debian's docker.io, a daemon without iptables/bridge (the CI
# kernel has neither), a base image made with debootstrap, and both edgelab images.
# Idempotent: every step is skipped when its result is already there.
#
# Usage: .ci/docker-setup.sh [--compose-images] [VENV_BIN]      (default .venv/bin)
#   --compose-images  also build edgelab-redis:local and edgelab-postgres:local from
#                     Debian packages, for `docker compose up` without a registry.
set -euo pipefail
cd "$(dirname "$0")/.."
COMPOSE_IMAGES=0
if [ "${1:-}" = "--compose-images" ]; then COMPOSE_IMAGES=1; shift; fi
BIN=${1:-.venv/bin}
BASE_IMAGE=${EDGELAB_BASE_IMAGE:-edgelab-base:bookworm}
DATA_DIR=${EDGELAB_DATA_DIR:-var}
LOG_DIR="$DATA_DIR/docker"
mkdir -p "$LOG_DIR"

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null \
   || ! command -v docker-compose >/dev/null; then
  echo "== installing docker.io, docker-compose and debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose debootstrap >/dev/null
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

if [ "$COMPOSE_IMAGES" = 1 ]; then
  if ! docker image inspect edgelab-redis:local >/dev/null 2>&1; then
    echo "== building edgelab-redis:local from Debian's redis-server"
    docker build -q --network host -t edgelab-redis:local --build-arg BASE_IMAGE="$BASE_IMAGE" - <<'DOCKERFILE'
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
EXPOSE 6379
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", ""]
DOCKERFILE
  fi
  if ! docker image inspect edgelab-postgres:local >/dev/null 2>&1; then
    echo "== building edgelab-postgres:local from Debian's postgresql"
    # Mimics the official image's contract: POSTGRES_USER/PASSWORD/DB, data in
    # /var/lib/postgresql/data, pg_isready on PATH.
    docker build -q --network host -t edgelab-postgres:local --build-arg BASE_IMAGE="$BASE_IMAGE" - <<'DOCKERFILE'
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
RUN printf '%s\n' '#!/bin/sh' 'set -e' \
  'mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"' \
  'if [ ! -s "$PGDATA/PG_VERSION" ]; then' \
  '  echo "$POSTGRES_PASSWORD" > /tmp/pw && chown postgres /tmp/pw' \
  '  su postgres -c "initdb -U $POSTGRES_USER --pwfile=/tmp/pw --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C -D $PGDATA" && rm /tmp/pw' \
  '  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"' \
  '  su postgres -c "pg_ctl -D $PGDATA -o \"-c listen_addresses=\" -w start"' \
  '  su postgres -c "psql -U $POSTGRES_USER -d postgres -c \"CREATE DATABASE $POSTGRES_DB\"" || true' \
  '  su postgres -c "pg_ctl -D $PGDATA -m fast -w stop"' \
  'fi' \
  'mkdir -p /var/run/postgresql && chown postgres /var/run/postgresql' \
  'exec su postgres -c "postgres -D $PGDATA -c listen_addresses=*"' > /entrypoint.sh \
 && chmod +x /entrypoint.sh
EXPOSE 5432
ENTRYPOINT ["/entrypoint.sh"]
DOCKERFILE
  fi
fi
