#!/bin/sh
set -eu
data=/var/lib/postgresql/data
bin=/usr/lib/postgresql/15/bin
if [ ! -s "$data/PG_VERSION" ]; then
  printf '%s\n' "$POSTGRES_PASSWORD" >/tmp/pwfile
  "$bin/initdb" -D "$data" -U "$POSTGRES_USER" --pwfile=/tmp/pwfile -A scram-sha-256
  rm -f /tmp/pwfile
  echo "listen_addresses = '*'" >>"$data/postgresql.conf"
  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$data/pg_hba.conf"
  "$bin/pg_ctl" -D "$data" -w start -o "-c listen_addresses=''"
  PGPASSWORD="$POSTGRES_PASSWORD" "$bin/psql" -U "$POSTGRES_USER" -d postgres -c "CREATE DATABASE \"$POSTGRES_DB\""
  for f in /docker-entrypoint-initdb.d/*.sql; do
    [ -e "$f" ] && PGPASSWORD="$POSTGRES_PASSWORD" "$bin/psql" -U "$POSTGRES_USER" -d "$POSTGRES_DB" -f "$f"
  done
  "$bin/pg_ctl" -D "$data" -w stop
fi
exec "$bin/postgres" -D "$data"
