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
BUILD=$(cd "${1:-$root/build}" && pwd)
SECS=${2:-5}
MEM=${ARGON2_MEMORY_KIB:-19456}
ITER=${ARGON2_ITERATIONS:-2}
WORKERS=${HASH_WORKERS:-2}
LOGIN_INFLIGHT=${LOGIN_INFLIGHT:-4}
VALIDATE_PROBE_INFLIGHT=${VALIDATE_PROBE_INFLIGHT:-4}
BIN=$BUILD/bin
for b in rpc_load auth_hash_loop auth_bench_prep auth-service user-service permission-service; do
  [ -x "$BIN/$b" ] || { echo "bench_auth: $BIN/$b not built" >&2; exit 1; }
done

export HARNESS_DIR=$BUILD/bench-auth-harness
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
psql -U postgres -d postgres -c "DROP DATABASE IF EXISTS bench_auth" -c "CREATE DATABASE bench_auth"
psql -U postgres -d bench_auth -f "$root/deploy/postgres/init.sql" >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
db() { echo "host=127.0.0.1 port=$PGPORT dbname=bench_auth user=$1"; }
redis_url="redis://127.0.0.1:$REDIS_PORT/38"

uport=$(free_port); pport=$(free_port); aport=$(free_port)
env LISTEN_ADDR=127.0.0.1:$uport METRICS_ADDR=127.0.0.1:$(free_port) LOG_LEVEL=warn \
  DATABASE_URL="$(db user_svc)" REDIS_URL="$redis_url" PAGE_TOKEN_SECRET=bench \
  "$BIN/user-service" >>"$work/user.log" 2>&1 &
pids+=($!)
env LISTEN_ADDR=127.0.0.1:$pport METRICS_ADDR=127.0.0.1:$(free_port) LOG_LEVEL=warn \
  DATABASE_URL="$(db permission_svc)" REDIS_URL="$redis_url" \
  "$BIN/permission-service" >>"$work/permission.log" 2>&1 &
pids+=($!)
env LISTEN_ADDR=127.0.0.1:$aport METRICS_ADDR=127.0.0.1:$(free_port) LOG_LEVEL=warn \
  DATABASE_URL="$(db auth_svc)" REDIS_URL="$redis_url" \
  USER_SERVICE_ADDR=127.0.0.1:$uport PERMISSION_SERVICE_ADDR=127.0.0.1:$pport \
  JWT_KEYS_DIR="$work/keys" JWT_KEY_AUTOGENERATE=true \
  ARGON2_MEMORY_KIB="$MEM" ARGON2_ITERATIONS="$ITER" HASH_WORKERS="$WORKERS" HASH_QUEUE=64 \
  HASH_NICE="${HASH_NICE:-5}" \
  LOGIN_MAX_FAILURES=1000 RPC_THREADS="${AUTH_RPC_THREADS:-8}" \
  "$BIN/auth-service" >>"$work/auth.log" 2>&1 &
pids+=($!)
wait_port "$uport"; wait_port "$pport"; wait_port "$aport"
"$BIN/auth_bench_prep" "127.0.0.1:$aport" bench@example.com "bench password 123" "$work"

load() { # $1 method, $2 request file, $3 in flight, $4 seconds
  "$BIN/rpc_load" --target "127.0.0.1:$aport" --method "/auth.v1.AuthService/$1" \
    --request-file "$2" --inflight "$3" --duration "$4"
}
echo "# $(date -u +%FT%TZ) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), build $BUILD"
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
