#!/usr/bin/env bash
# bench_user.sh: GetUser by direct gRPC with rpc_load, 64 calls in flight: Health/Check (the
# runtime's ceiling in the same run), GetUser served from the Redis cache (hit), and GetUser with the
# cache disabled (USER_CACHE_TTL_SEC=0: every call reads PostgreSQL, i.e. the miss path).
# Starts its own harness (private PostgreSQL + Redis) and two user-service processes; stops them all.
# Usage: tests/bench/user/bench_user.sh [build-dir] [seconds]    (default build dir: build, 5 s)
#   env: INFLIGHT (64), RPC_THREADS (2) of the services.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
# shellcheck source=tests/bench/lib.sh
. "$root/tests/bench/lib.sh"
export SECS=${2:-5} INFLIGHT=${INFLIGHT:-64} # read by bench_load
bench_init user "${1:-$root/build}" rpc_load user-service

# Two replicas: cache on (hit path) and off (miss path).
bench_service user-ttl300 user-service user_svc 10 USER_CACHE_TTL_SEC=300 PAGE_TOKEN_SECRET=bench \
  RPC_THREADS="${RPC_THREADS:-2}"
hit_port=$BENCH_PORT
bench_service user-ttl0 user-service user_svc 10 USER_CACHE_TTL_SEC=0 PAGE_TOKEN_SECRET=bench \
  RPC_THREADS="${RPC_THREADS:-2}"
miss_port=$BENCH_PORT

# One user to read (after the service applied its migrations); GetUserRequest{id} encoded by hand
# (field 1, length-delimited, 36 bytes).
id=$(bench_psql -U user_svc -d "$BENCH_DB" -At -c \
  "INSERT INTO users.users (email, display_name) VALUES ('bench@example.com', 'Bench') RETURNING id")
printf '\x0a\x24%s' "$id" >"$BENCH_WORK/get_user.bin"

bench_header "RPC_THREADS=${RPC_THREADS:-2}"
bench_load "$hit_port" /grpc.health.v1.Health/Check
bench_load "$hit_port" /user.v1.UserService/GetUser "$BENCH_WORK/get_user.bin"
bench_load "$miss_port" /user.v1.UserService/GetUser "$BENCH_WORK/get_user.bin"
