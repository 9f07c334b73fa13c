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
# shellcheck source=tests/bench/lib.sh
. "$root/tests/bench/lib.sh"
export SECS=${2:-5} INFLIGHT=${INFLIGHT:-64} # read by bench_load
bench_init permission "${1:-$root/build}" rpc_load permission-service

# Two replicas: in-process cache on (the normal path) and off (every Check queries PostgreSQL).
for size in 65536 0; do
  bench_service "perm-$size" permission-service permission_svc 20 PERMISSION_CACHE_SIZE="$size" \
    RPC_THREADS="${RPC_THREADS:-2}"
  [ "$size" = 0 ] && miss_port=$BENCH_PORT || hit_port=$BENCH_PORT
done

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
} | bench_psql -U permission_svc -d "$BENCH_DB" >/dev/null
count=$(bench_psql -U permission_svc -d "$BENCH_DB" -At -c "SET search_path = permissions;
  SELECT count(*) FROM (SELECT unnest(permissions) FROM roles WHERE name LIKE 'bench-r%') p")
[ "$count" = 50 ] || { echo "bench_permission: seeded $count permissions, expected 50" >&2; exit 1; }

# CheckRequest{user_id, permission} encoded by hand: field 1 (0x0a) and field 2 (0x12),
# length-delimited. The permission is the last of the user's sorted effective set (granted by the
# assigned role r3): the match scans all 50 entries, the worst case for an allowed answer.
perm="res3-9:act9"
printf '\x0a\x24%s\x12'"$(printf '\\x%02x' ${#perm})"'%s' "$uid" "$perm" >"$BENCH_WORK/check.bin"

bench_header "RPC_THREADS=${RPC_THREADS:-2}"
# Rounds alternate Health / Check (cached) so both see the same machine load on average; the
# uncached Check runs once at the end.
for r in $(seq 1 "${ROUNDS:-3}"); do
  echo "# round $r"
  bench_load "$hit_port" /grpc.health.v1.Health/Check
  bench_load "$hit_port" /permission.v1.PermissionService/Check "$BENCH_WORK/check.bin"
done
bench_load "$miss_port" /permission.v1.PermissionService/Check "$BENCH_WORK/check.bin"
