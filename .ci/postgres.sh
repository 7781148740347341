#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the distributed-study test.
#   .ci/postgres.sh start   -> prints the storage URL on stdout, in the README's form
#                              postgresql://user:password@host:port/db (a password checked by the server)
#   .ci/postgres.sh stop
# Installs Debian's postgresql when it is missing (CI runs as root).
set -euo pipefail
STATE=/tmp/ablate-ci-postgres

if [ "${1:-start}" = stop ]; then
  [ -f "$STATE/dir" ] || exit 0
  DIR=$(cat "$STATE/dir")
  BIN=$(cat "$STATE/bin")
  runuser -u postgres -- "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$DIR" "$STATE"
  exit 0
fi

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
fi
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
# a free port (another server, or a leftover one, may hold any fixed port)
PORT=${ABLATE_PG_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
DIR=$(mktemp -d /tmp/ablate-pg.XXXXXX)
cleanup() { runuser -u postgres -- "$BIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$DIR" "$STATE"; }
trap cleanup ERR
chown postgres "$DIR"
mkdir -p "$STATE"
echo "$DIR" > "$STATE/dir"
echo "$BIN" > "$STATE/bin"
PASSWORD=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
# the socket (local) trusts the postgres user for setup; TCP connections must give the password
runuser -u postgres -- "$BIN/initdb" -D "$DIR/data" --auth-local=trust --auth-host=scram-sha-256 -U postgres >/dev/null
runuser -u postgres -- "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR" start >/dev/null
runuser -u postgres -- "$BIN/psql" -q -h "$DIR" -p "$PORT" -U postgres \
  -c "CREATE ROLE ablate LOGIN PASSWORD '$PASSWORD'" >/dev/null
runuser -u postgres -- "$BIN/createdb" -h "$DIR" -p "$PORT" -U postgres -O ablate ablate_ci
echo "postgresql://ablate:$PASSWORD@127.0.0.1:$PORT/ablate_ci"
