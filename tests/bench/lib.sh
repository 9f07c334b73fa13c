# shellcheck shell=bash
# lib.sh: what the service benchmarks share, sourced by tests/bench/<area>/bench_<area>.sh: a private
# harness (PostgreSQL + Redis) with a fresh database, services started in the background with their
# PIDs recorded, and everything stopped by PID on EXIT (also on error or Ctrl-C).
#
#   . "$root/tests/bench/lib.sh"
#   bench_init NAME BUILD_DIR BINARY...   checks the binaries, starts the harness in
#                                         $BUILD/bench-NAME-harness, creates database bench_NAME
#                                         (deploy/postgres/init.sql); sets BIN, BENCH_DB, BENCH_WORK
#   bench_spawn LOG PORT CMD...           runs CMD in the background (output → $BENCH_WORK/LOG.log),
#                                         records its PID, waits until PORT accepts connections.
#                                         Never call it inside $(...): the PID would be recorded in a
#                                         subshell and the process would outlive the script.
#   bench_service LOG BINARY ROLE REDIS_DB [VAR=VALUE...]
#                                         bench_spawn of $BIN/BINARY on a free port (set in
#                                         BENCH_PORT), LOG_LEVEL=warn, DATABASE_URL as ROLE on
#                                         $BENCH_DB, REDIS_URL on Redis db REDIS_DB, plus the VARs
#   bench_psql ARGS...                    psql on the harness (-U ROLE -d DB are the caller's)
#   bench_free_port                       prints a free loopback port
#   bench_load PORT METHOD [REQUEST_FILE] rpc_load, $INFLIGHT calls in flight for $SECS seconds
#   bench_header [TEXT]                   "# <UTC time> <cores>, load average, build, TEXT"

BENCH_PIDS=()

bench_cleanup() {
  local p
  for p in "${BENCH_PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${BENCH_PIDS[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  BENCH_PIDS=()
  if [ -n "${BENCH_ROOT:-}" ]; then
    "$BENCH_ROOT/tests/support/harness" stop >/dev/null 2>&1 || true
  fi
  [ -z "${BENCH_WORK:-}" ] || rm -rf "$BENCH_WORK"
}

bench_init() {
  local name=$1 build=$2 b
  shift 2
  BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  BUILD=$(cd "$build" && pwd)
  BIN=$BUILD/bin
  for b in "$@"; do
    [ -x "$BIN/$b" ] || { echo "bench_$name: $BIN/$b not built (cmake --build $BUILD --target $b)" >&2; exit 1; }
  done
  BENCH_DB=bench_$name
  BENCH_WORK=$(mktemp -d)
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  export HARNESS_DIR=$BUILD/bench-$name-harness
  "$BENCH_ROOT/tests/support/harness" start >/dev/null
  # shellcheck disable=SC1091
  . "$HARNESS_DIR/env"
  bench_psql -U postgres -d postgres -c "DROP DATABASE IF EXISTS $BENCH_DB" -c "CREATE DATABASE $BENCH_DB"
  bench_psql -U postgres -d "$BENCH_DB" -f "$BENCH_ROOT/deploy/postgres/init.sql" >/dev/null
}

bench_psql() { PGOPTIONS="-c client_min_messages=warning" command psql -X -q -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" "$@"; }

bench_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

bench_spawn() {
  local log=$1 port=$2 pid
  shift 2
  "$@" >>"$BENCH_WORK/$log.log" 2>&1 &
  pid=$!
  BENCH_PIDS+=("$pid")
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "bench: $log exited before listening on $port:" >&2
      tail -n 20 "$BENCH_WORK/$log.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "bench: $log not listening on $port after 20 s" >&2
  exit 1
}

bench_service() {
  local log=$1 binary=$2 role=$3 redis_db=$4
  shift 4
  BENCH_PORT=$(bench_free_port)
  bench_spawn "$log" "$BENCH_PORT" env LISTEN_ADDR="127.0.0.1:$BENCH_PORT" \
    METRICS_ADDR="127.0.0.1:$(bench_free_port)" LOG_LEVEL=warn \
    DATABASE_URL="host=127.0.0.1 port=$PGPORT dbname=$BENCH_DB user=$role" \
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT/$redis_db" "$@" "$BIN/$binary"
}

bench_load() {
  local req=()
  [ -z "${3:-}" ] || req=(--request-file "$3")
  echo "== $2 @127.0.0.1:$1 (${INFLIGHT:-64} in flight, ${SECS:-5}s)"
  "$BIN/rpc_load" --target "127.0.0.1:$1" --method "$2" "${req[@]}" --inflight "${INFLIGHT:-64}" \
    --duration "${SECS:-5}"
}

bench_header() {
  echo "# $(date -u +%FT%TZ) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), build $BUILD${1:+, $1}"
}
