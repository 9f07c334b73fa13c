#!/usr/bin/env bash
# bench_auth.sh: the auth service's benchmarks, on this machine, in one run:
#   1. the argon2id verify ceiling (auth_hash_loop, HASH_WORKERS threads, the service's parameters);
#   2. Login/s through auth-service (rpc_load, LOGIN_INFLIGHT in flight) → compare with 1;
#   3. ValidateToken calls/s with 64 in flight;
#   4. ValidateToken p99 idle, then while a login storm saturates the hash pool (and during a
#      flood far beyond it).
# Starts its own harness (private PostgreSQL + Redis), user-, permission- and auth-service; stops them.
# Usage: tests/bench/auth/bench_auth.sh [build-dir] [seconds]    (default build dir: build, 5 s)
# Build first (Release, no sanitizers), e.g.:
#   cmake -S . -B build-rel -DSANITIZE=OFF -DCMAKE_BUILD_TYPE=Release -DWERROR=OFF
#   cmake --build build-rel -j2 --target auth-service user-service permission-service rpc_load \
#         auth_hash_loop auth_bench_prep
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
# shellcheck source=tests/bench/lib.sh
. "$root/tests/bench/lib.sh"
SECS=${2:-5}
MEM=${ARGON2_MEMORY_KIB:-19456}
ITER=${ARGON2_ITERATIONS:-2}
WORKERS=${HASH_WORKERS:-2}
LOGIN_INFLIGHT=${LOGIN_INFLIGHT:-4}
VALIDATE_PROBE_INFLIGHT=${VALIDATE_PROBE_INFLIGHT:-4}
bench_init auth "${1:-$root/build}" rpc_load auth_hash_loop auth_bench_prep auth-service \
  user-service permission-service
work=$BENCH_WORK

bench_service user user-service user_svc 38 PAGE_TOKEN_SECRET=bench
uport=$BENCH_PORT
bench_service permission permission-service permission_svc 38
pport=$BENCH_PORT
bench_service auth auth-service auth_svc 38 \
  USER_SERVICE_ADDR="127.0.0.1:$uport" PERMISSION_SERVICE_ADDR="127.0.0.1:$pport" \
  JWT_KEYS_DIR="$work/keys" JWT_KEY_AUTOGENERATE=true \
  ARGON2_MEMORY_KIB="$MEM" ARGON2_ITERATIONS="$ITER" HASH_WORKERS="$WORKERS" HASH_QUEUE=64 \
  HASH_NICE="${HASH_NICE:-5}" LOGIN_MAX_FAILURES=1000 RPC_THREADS="${AUTH_RPC_THREADS:-72}"
aport=$BENCH_PORT
"$BIN/auth_bench_prep" "127.0.0.1:$aport" bench@example.com "bench password 123" "$work"

load() { # $1 method, $2 request file, $3 in flight, $4 seconds
  "$BIN/rpc_load" --target "127.0.0.1:$aport" --method "/auth.v1.AuthService/$1" \
    --request-file "$2" --inflight "$3" --duration "$4"
}
bench_header "AUTH_RPC_THREADS=${AUTH_RPC_THREADS:-72}"
echo "== 1. argon2id verify ceiling, $WORKERS threads, m=$MEM KiB t=$ITER (${SECS}s)"
"$BIN/auth_hash_loop" --threads "$WORKERS" --duration "$SECS" --memory-kib "$MEM" --iterations "$ITER"
echo "== 2. Login, $LOGIN_INFLIGHT in flight (${SECS}s)"
load Login "$work/login.req" "$LOGIN_INFLIGHT" "$SECS"
echo "== 3. ValidateToken, 64 in flight (${SECS}s)"
load ValidateToken "$work/validate.req" 64 "$SECS"
echo "== 4a. ValidateToken, $VALIDATE_PROBE_INFLIGHT in flight, idle (${SECS}s)"
load ValidateToken "$work/validate.req" "$VALIDATE_PROBE_INFLIGHT" "$SECS"
storm() { # $1 = Login calls in flight
  echo "== 4b. the same during a login storm (Login, $1 in flight)"
  load Login "$work/login.req" "$1" $((SECS + 2)) >"$work/storm.txt" &
  local spid=$!
  sleep 1
  load ValidateToken "$work/validate.req" "$VALIDATE_PROBE_INFLIGHT" "$SECS"
  wait "$spid" || true
  echo "   (the storm itself:)"
  sed 's/^/   /' "$work/storm.txt"
}
# STORM_INFLIGHT: enough to keep every hash worker busy with jobs queued (the admission limit is
# RPC_THREADS - 1); FLOOD_INFLIGHT: far beyond it, most calls refused at once (RESOURCE_EXHAUSTED)
# and re-sent at once by rpc_load, i.e. a client that ignores Retry-After.
storm "${STORM_INFLIGHT:-6}"
storm "${FLOOD_INFLIGHT:-128}"
