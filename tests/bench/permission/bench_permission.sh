#!/usr/bin/env bash
# bench_permission.sh: permission.v1 Check by direct gRPC with rpc_load, 64 calls in flight, for a
# user holding 3 roles (a chain r3 → r2 → r1) with 50 permissions through inheritance. Measures, in
# the same run: Health/Check (the runtime's ceiling), Check served from the in-process cache (the
# normal path: one Redis MGET + cache lookup), and Check with the cache disabled
# (PERMISSION_CACHE_SIZE=0: every call runs the recursive query in PostgreSQL).
# Starts its own harness (private PostgreSQL + Redis) and the services; stops them all.
# Usage: tests/bench/permission/bench_permission.sh [build-dir] [seconds]   (default: build, 5 s)
#   env: ROUNDS (3), INFLIGHT (64), RPC_THREADS (2) of the services.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
BUILD=$(cd "${1:-$root/build}" && pwd)
SECS=${2:-5}
INFLIGHT=${INFLIGHT:-64}
BIN=$BUILD/bin
LOAD=$BIN/rpc_load
[ -x "$LOAD" ] || { echo "bench_permission: $LOAD not built (cmake --build $BUILD --target rpc_load)" >&2; exit 1; }
[ -x "$BIN/permission-service" ] || { echo "bench_permission: $BIN/permission-service not built" >&2; exit 1; }

export HARNESS_DIR=$BUILD/bench-permission-harness
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
psql -U postgres -d postgres -c "DROP DATABASE IF EXISTS bench_permission" -c "CREATE DATABASE bench_permission"
psql -U postgres -d bench_permission -f "$root/deploy/postgres/init.sql" >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# start_perm CACHE_SIZE: starts a replica and sets $port. Not called in $(...): the pid must be
# recorded in this shell for cleanup.
start_perm() {
  local mport
  port=$(free_port); mport=$(free_port)
  env LISTEN_ADDR=127.0.0.1:$port METRICS_ADDR=127.0.0.1:$mport LOG_LEVEL=warn \
    DATABASE_URL="host=127.0.0.1 port=$PGPORT dbname=bench_permission user=permission_svc" \
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT/20" PERMISSION_CACHE_SIZE="$1" \
    RPC_THREADS="${RPC_THREADS:-2}" \
    "$BIN/permission-service" >>"$work/perm-$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
}
start_perm 65536; hit_port=$port
start_perm 0; miss_port=$port

# The data (after the service applied its migrations): r1 20 perms, r2 inherits r1 + 15,
# r3 inherits r2 + 15; the user holds r3, so 3 effective roles and 50 permissions.
uid=6f1c2d3e-4b5a-4c6d-8e7f-0123456789ab
{
  echo "SET search_path = permissions;"
  for r in 1 2 3; do
    n=$([ $r = 1 ] && echo 20 || echo 15)
    perms=$(for i in $(seq 1 "$n"); do printf '"res%d-%d:act%d",' "$r" "$i" "$i"; done)
    echo "INSERT INTO roles (name, permissions) VALUES ('bench-r$r', '{${perms%,}}');"
  done
  echo "INSERT INTO role_parents VALUES ('bench-r2', 'bench-r1', 1), ('bench-r3', 'bench-r2', 1);"
  echo "INSERT INTO user_roles (user_id, role) VALUES ('$uid', 'bench-r3');"
} | psql -U permission_svc -d bench_permission >/dev/null
count=$(psql -U permission_svc -d bench_permission -At -c "SET search_path = permissions;
  SELECT count(*) FROM (SELECT unnest(permissions) FROM roles WHERE name LIKE 'bench-r%') p")
[ "$count" = 50 ] || { echo "bench_permission: seeded $count permissions, expected 50" >&2; exit 1; }

# CheckRequest{user_id, permission} encoded by hand: field 1 (0x0a) and field 2 (0x12),
# length-delimited. The permission is the last of the user's sorted effective set (granted by the
# assigned role r3): the match scans all 50 entries, the worst case for an allowed answer.
perm="res3-9:act9"
printf '\x0a\x24%s\x12'"$(printf '\\x%02x' ${#perm})"'%s' "$uid" "$perm" >"$work/check.bin"

load() { # $1 port, $2 method, $3 request file or ""
  local req=()
  [ -n "$3" ] && req=(--request-file "$3")
  echo "== $2 @127.0.0.1:$1 ($INFLIGHT in flight, ${SECS}s)"
  "$LOAD" --target "127.0.0.1:$1" --method "$2" "${req[@]}" --inflight "$INFLIGHT" \
    --duration "$SECS"
}
echo "# $(date -u +%FT%TZ) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), build $BUILD, RPC_THREADS=${RPC_THREADS:-2}"
# Rounds alternate Health / Check (cached) so both see the same machine load on average; the
# uncached Check runs once at the end.
for r in $(seq 1 "${ROUNDS:-3}"); do
  echo "# round $r"
  load "$hit_port" /grpc.health.v1.Health/Check ""
  load "$hit_port" /permission.v1.PermissionService/Check "$work/check.bin"
done
load "$miss_port" /permission.v1.PermissionService/Check "$work/check.bin"
