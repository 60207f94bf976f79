#!/usr/bin/env bash
# Local PostgreSQL for the audit writer's PostgreSQL tests (no Docker).
#
#   postgres.sh up [--port N]     start (or reuse) a throw-away server; last stdout line is
#                                 LOOPWISE_AUDIT_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:<port>/audit
#   postgres.sh down [--port N]   stop it and delete its data
#
# Uses the Debian postgresql package; installs it with apt-get when missing and running as
# root. The server runs as the `postgres` user with its data under /tmp. Progress on stderr.
set -euo pipefail

PORT="${LOOPWISE_PG_PORT:-55432}"
log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

cmd="${1:-}"; shift || true
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    *) die "unknown argument '$1'" ;;
  esac
done
DATA="/tmp/loopwise-pg-$PORT"
URL="postgresql://postgres@127.0.0.1:$PORT/audit"

pg_bin() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  [[ -n "$dir" && -x "$dir/initdb" ]] && printf '%s' "$dir"
}

as_postgres() {
  if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cmd_up() {
  local bin; bin="$(pg_bin)" || true
  if [[ -z "$bin" ]]; then
    [[ "$(id -u)" == 0 ]] || die "PostgreSQL is not installed and this is not root"
    log "installing PostgreSQL from Debian's packages ..."
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >&2 \
      || die "apt-get could not install postgresql"
    bin="$(pg_bin)" || die "postgresql installed but initdb not found"
  fi
  mkdir -p "$DATA"
  [[ "$(id -u)" == 0 ]] && chown postgres: "$DATA"
  if ! as_postgres "$bin/pg_ctl" -D "$DATA/db" status >/dev/null 2>&1; then
    if [[ ! -f "$DATA/db/PG_VERSION" ]]; then
      as_postgres "$bin/initdb" -D "$DATA/db" -U postgres --auth=trust >"$DATA/initdb.log" 2>&1 \
        || { cat "$DATA/initdb.log" >&2; die "initdb failed"; }
    fi
    as_postgres "$bin/pg_ctl" -D "$DATA/db" -l "$DATA/server.log" -w -t 60 \
      -o "-p $PORT -k $DATA -c listen_addresses=127.0.0.1" start >&2 \
      || { tail -n 30 "$DATA/server.log" >&2; die "PostgreSQL did not start"; }
  fi
  if ! as_postgres "$bin/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'audit'" | grep -q 1; then
    as_postgres "$bin/createdb" -h 127.0.0.1 -p "$PORT" -U postgres audit
  fi
  log "PostgreSQL ready on 127.0.0.1:$PORT (data $DATA)"
  printf 'LOOPWISE_AUDIT_TEST_POSTGRES_URL=%s\n' "$URL"
}

cmd_down() {
  local bin; bin="$(pg_bin)" || true
  if [[ -n "$bin" && -d "$DATA/db" ]]; then
    as_postgres "$bin/pg_ctl" -D "$DATA/db" -m fast stop >&2 || true
  fi
  rm -rf -- "$DATA"
}

case "$cmd" in
  up) cmd_up ;;
  down) cmd_down ;;
  *) sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
