#!/usr/bin/env bash
# bench_user.sh: GetUser by direct gRPC with rpc_load, 64 calls in flight: Health/Check (the
# runtime's ceiling in the same run), GetUser served from the Redis cache (hit), and GetUser with the
# cache disabled (USER_CACHE_TTL_SEC=0: every call reads PostgreSQL, i.e. the miss path).
# Starts its own harness (private PostgreSQL + Redis) and two user-service processes; stops them all.
# Usage: tests/bench/user/bench_user.sh [build-dir] [seconds]    (default build dir: build, 5 s)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
BUILD=$(cd "${1:-$root/build}" && pwd)
SECS=${2:-5}
INFLIGHT=${INFLIGHT:-64}
BIN=$BUILD/bin
LOAD=$BIN/rpc_load
[ -x "$LOAD" ] || { echo "bench_user: $LOAD not built (cmake --build $BUILD --target rpc_load)" >&2; exit 1; }
[ -x "$BIN/user-service" ] || { echo "bench_user: $BIN/user-service not built" >&2; exit 1; }

export HARNESS_DIR=$BUILD/bench-user-harness
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  "$root/tests/support/harness" stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
"$root/tests/support/harness" start >/dev/null
# shellcheck disable=SC1091
. "$HARNESS_DIR/env"
psql() { command psql -X -q -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" "$@"; }
psql -U postgres -d postgres -c "DROP DATABASE IF EXISTS bench_user" -c "CREATE DATABASE bench_user"
psql -U postgres -d bench_user -f "$root/deploy/postgres/init.sql" >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_user() { # $1 = cache ttl; prints the port
  local port mport
  port=$(free_port); mport=$(free_port)
  env LISTEN_ADDR=127.0.0.1:$port METRICS_ADDR=127.0.0.1:$mport LOG_LEVEL=warn \
    DATABASE_URL="host=127.0.0.1 port=$PGPORT dbname=bench_user user=user_svc" \
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT/10" USER_CACHE_TTL_SEC="$1" \
    PAGE_TOKEN_SECRET=bench RPC_THREADS="${RPC_THREADS:-2}" \
    "$BIN/user-service" >>"$work/user-$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  echo "$port"
}
hit_port=$(start_user 300)
miss_port=$(start_user 0)

# One user to read; GetUserRequest{id} encoded by hand (field 1, length-delimited, 36 bytes).
id=$(psql -U user_svc -d bench_user -At -c \
  "INSERT INTO users.users (email, display_name) VALUES ('bench@example.com', 'Bench') RETURNING id")
printf '\x0a\x24%s' "$id" >"$work/get_user.bin"

load() { # $1 port, $2 method, $3 request file or ""
  local req=()
  [ -n "$3" ] && req=(--request "$3")
  echo "== $2 @127.0.0.1:$1 ($INFLIGHT in flight, ${SECS}s)"
  "$LOAD" --target "127.0.0.1:$1" --method "$2" "${req[@]}" --concurrency "$INFLIGHT" \
    --duration "$SECS"
}
echo "# $(date -u +%FT%TZ) $(nproc) cores, build $BUILD"
load "$hit_port" /grpc.health.v1.Health/Check ""
load "$hit_port" /user.v1.UserService/GetUser "$work/get_user.bin"
load "$miss_port" /user.v1.UserService/GetUser "$work/get_user.bin"
