#!/usr/bin/env bash
# docker compose for real on a machine without an image registry (only Debian's archive and
# PyPI reachable): a Debian base image made with debootstrap and `docker import`, the
# Loopwise images built on it from ./Dockerfile, Kafka, PostgreSQL and Prometheus images
# built from Debian packages and the cached Kafka jars (deploy/compose/local/), then
# `docker-compose up` with docker-compose.local.yml over docker-compose.yml. Grafana has
# no Debian package: it is left out here (the dashboard is checked by tests/deploy).
#
#   local.sh base      the Debian base image (loopwise-local/base:bookworm)
#   local.sh images    the Loopwise images (on the base, or PYTHON_IMAGE=... with a registry)
#   local.sh up        base, images, infrastructure images, then compose up and wait
#   local.sh down      compose down (volumes kept; add -v by hand to drop them)
#   local.sh stop-engine  stop the engine this script started
#
# A Docker engine is started if none answers (dockerd --iptables=false --bridge=none, as
# root, on var/compose-local/docker.sock). Logs under var/compose-local/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="$ROOT/var/compose-local"
BASE_IMAGE="${LOOPWISE_BASE_IMAGE:-loopwise-local/base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SERVICES=(transcription sentiment compliance-scoring review-router review-console audit-writer feedback-exporter)
COMPOSE=(docker-compose -f "$ROOT/docker-compose.yml" -f "$ROOT/deploy/compose/docker-compose.local.yml")

log() { printf 'local.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# An engine started here listens on its own socket, never /var/run/docker.sock: a Docker
# engine that answers there makes the test suite pick Testcontainers (which needs a registry).
OWN_SOCKET="$STATE/docker.sock"
if [[ -z "${DOCKER_HOST:-}" ]] && ! docker info >/dev/null 2>&1; then
  export DOCKER_HOST="unix://$OWN_SOCKET"
fi

ensure_docker() {
  if docker info >/dev/null 2>&1; then return 0; fi
  command -v dockerd >/dev/null || die "no Docker engine answers and dockerd is not installed (apt-get install docker.io)"
  [[ $(id -u) == 0 ]] || die "no Docker engine answers; starting dockerd needs root"
  mkdir -p "$STATE"
  log "starting dockerd (log $STATE/dockerd.log)"
  nohup dockerd -H "$DOCKER_HOST" --pidfile "$STATE/dockerd.pid" --exec-root "$STATE/exec" \
    --iptables=false --bridge=none --default-ulimit nofile=1024:1024 \
    --default-ulimit nproc=1024:1024 >"$STATE/dockerd.log" 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && return 0; sleep 1; done
  tail -n 20 "$STATE/dockerd.log" >&2
  die "dockerd did not answer within 60 s"
}

cmd_base() {
  ensure_docker
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "$BASE_IMAGE exists"
    return 0
  fi
  command -v debootstrap >/dev/null || die "debootstrap not installed (apt-get install debootstrap)"
  local root="$STATE/rootfs"
  rm -rf "$root"
  mkdir -p "$root"
  log "debootstrap bookworm from $MIRROR (a few minutes; log $STATE/debootstrap.log)"
  debootstrap --variant=minbase \
    --include=python3.11,python3.11-venv,python3-pip,ca-certificates,passwd,wget \
    bookworm "$root" "$MIRROR" >"$STATE/debootstrap.log" 2>&1 ||
    { tail -n 30 "$STATE/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  printf 'deb %s bookworm main\n' "$MIRROR" >"$root/etc/apt/sources.list"
  # Trust what this host trusts (a TLS-intercepting egress proxy's CA, say): the builds
  # reach PyPI and Debian through the same network.
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  local bundle=/etc/ssl/certs/ca-certificates.crt
  log "docker import -> $BASE_IMAGE"
  tar -C "$root" -c . | docker import \
    --change "ENV SSL_CERT_FILE=$bundle PIP_CERT=$bundle REQUESTS_CA_BUNDLE=$bundle UV_NATIVE_TLS=1" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
}

image_args() {
  if [[ -n "${PYTHON_IMAGE:-}" ]]; then
    printf -- '--build-arg\nPYTHON_IMAGE=%s\n' "$PYTHON_IMAGE"
  else
    printf -- '--build-arg\nPYTHON_IMAGE=%s\n--build-arg\nPYTHON=/usr/bin/python3.11\n' "$BASE_IMAGE"
  fi
}

cmd_images() {
  ensure_docker
  [[ -n "${PYTHON_IMAGE:-}" ]] || cmd_base
  local prefix version args
  prefix="$(sed -n 's/^LOOPWISE_IMAGE_PREFIX=//p' "$ROOT/.env")"
  version="$(sed -n 's/^LOOPWISE_VERSION=//p' "$ROOT/.env")"
  mapfile -t args < <(image_args)
  mkdir -p "$STATE"
  local svc
  for svc in "${SERVICES[@]}"; do
    log "building $prefix/$svc:$version (log $STATE/build-$svc.log)"
    # Host network: pip and uv reach PyPI (the engine has no bridge here).
    docker build --network host "${args[@]}" --build-arg "SERVICE=$svc" \
      -t "$prefix/$svc:$version" "$ROOT" >"$STATE/build-$svc.log" 2>&1 ||
      { tail -n 30 "$STATE/build-$svc.log" >&2; die "building $svc failed"; }
  done
}

cmd_infra() {
  ensure_docker
  cmd_base
  local jars
  jars="$(ls -d "${LOOPWISE_KAFKA_HOME:-$HOME/.cache/loopwise/kafka}"/dist/kafka-*/lib 2>/dev/null | tail -n 1)"
  [[ -n "$jars" ]] || die "no cached Kafka jars: run 'bash deploy/local/kafka.sh fetch' first"
  local ctx="$STATE/kafka-context"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp -r "$jars" "$ctx/lib"
  cp "$ROOT/deploy/compose/local/kafka-start.sh" "$ctx/"
  local name
  for name in kafka postgres prometheus; do
    log "building loopwise-local/$name (log $STATE/build-$name.log)"
    local context="$ROOT/deploy/compose/local"
    [[ $name == kafka ]] && context="$ctx"
    docker build --network host --build-arg "BASE=$BASE_IMAGE" -t "loopwise-local/$name" \
      -f "$ROOT/deploy/compose/local/$name.Dockerfile" "$context" >"$STATE/build-$name.log" 2>&1 ||
      { tail -n 30 "$STATE/build-$name.log" >&2; die "building $name failed"; }
  done
}

cmd_up() {
  command -v docker-compose >/dev/null || die "docker-compose not installed (apt-get install docker-compose)"
  cmd_images
  cmd_infra
  log "docker-compose up"
  "${COMPOSE[@]}" up -d --no-build
  local deadline=$((SECONDS + ${LOOPWISE_COMPOSE_TIMEOUT_S:-600})) waiting=""
  while ((SECONDS < deadline)); do
    waiting="$(not_ready)"
    if [[ -z "$waiting" ]]; then
      "${COMPOSE[@]}" ps
      log "every container is healthy (topics-init exited 0)"
      return 0
    fi
    sleep 10
  done
  "${COMPOSE[@]}" ps >&2
  die "not healthy: $waiting ('${COMPOSE[*]} logs SERVICE' says why)"
}

# Containers not (yet) as they should be: running and healthy, or exited 0 (topics-init).
not_ready() {
  local id line
  for id in $("${COMPOSE[@]}" ps -q); do
    line="$(docker inspect -f '{{.Name}} {{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.RestartCount}}' "$id")"
    read -r name status code health restarts <<<"$line"
    if [[ "$status" == exited && "$code" == 0 ]]; then continue; fi
    if [[ "$status" == running && "$health" =~ ^(healthy|none)$ ]]; then continue; fi
    printf '%s(%s/%s, %s restarts) ' "${name#/}" "$status" "$health" "$restarts"
  done
}

cmd_down() {
  "${COMPOSE[@]}" down
  cmd_stop_engine
}

cmd_stop_engine() {
  local pid
  pid="$(cat "$STATE/dockerd.pid" 2>/dev/null || true)"
  [[ -n "$pid" ]] && kill "$pid" 2>/dev/null && log "stopped dockerd (pid $pid)" || log "no engine of ours running"
}

case "${1:-}" in
  base) cmd_base ;;
  images) cmd_images ;;
  infra) cmd_infra ;;
  up) cmd_up ;;
  down) cmd_down ;;
  stop-engine) cmd_stop_engine ;;
  *) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
