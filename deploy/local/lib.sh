# shellcheck shell=bash disable=SC2034
# Shared by deploy/local/up and deploy/local/down: paths, ports, and how each component of the
# local stack (PostgreSQL, Redis, the three services, the gateway) is started, checked and stopped.
# Sourced, not executed. Every process is tracked by a PID file in $RUN_DIR; nothing is ever found
# or killed by name.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DATA=${LOCAL_DATA_DIR:-$ROOT/data}
BUILD=${LOCAL_BUILD_DIR:-$ROOT/build-release}
BIN=$BUILD/bin
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGDATA_DIR=$DATA/pg
REDIS_DIR=$DATA/redis
KEYS_DIR=$DATA/keys
LOG_DIR=$DATA/logs
RUN_DIR=$DATA/run

GATEWAY_BIND=${GATEWAY_BIND:-127.0.0.1}
GATEWAY_PORT=${GATEWAY_PORT:-8080}
AUTH_PORT=${AUTH_PORT:-50051}
USER_PORT=${USER_PORT:-50052}
PERMISSION_PORT=${PERMISSION_PORT:-50053}
AUTH_METRICS_PORT=${AUTH_METRICS_PORT:-9091}
USER_METRICS_PORT=${USER_METRICS_PORT:-9092}
PERMISSION_METRICS_PORT=${PERMISSION_METRICS_PORT:-9093}
LOCAL_PG_PORT=${LOCAL_PG_PORT:-15432}
LOCAL_REDIS_PORT=${LOCAL_REDIS_PORT:-16379}
# Seconds to wait for each component to become healthy, and for each to stop.
UP_TIMEOUT=${UP_TIMEOUT:-60}
DOWN_TIMEOUT=${DOWN_TIMEOUT:-20}

# Start order; stop order is the reverse.
SERVICES=(permission-service user-service auth-service gateway)

say() { printf '%s\n' "$*" >&2; }
die() { printf 'deploy/local: error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Runs a PostgreSQL server-side command as the cluster owner: `postgres` when we are root
# (PostgreSQL refuses to run as root), else the current user.
as_pg() {
  if is_root; then runuser -u postgres -- "$@"; else "$@"; fi
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_taken() {
  timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

pid_of() { # name → PID from its pid file (empty when none)
  local f=$RUN_DIR/$1.pid
  [ -s "$f" ] && tr -dc '0-9' <"$f" || true
}

# True when the PID recorded for a service is alive and still runs that service's binary
# (guards against a recycled PID after a reboot).
svc_alive() {
  local pid; pid=$(pid_of "$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # argv[0] is the binary (argv[1] when it is a script run by an interpreter).
  local a
  while IFS= read -r a; do [ "$(basename -- "$a")" = "$1" ] && return 0
  done < <(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n2)
  return 1
}

pg_pid() { [ -s "$PGDATA_DIR/postmaster.pid" ] && head -n1 "$PGDATA_DIR/postmaster.pid" | tr -dc '0-9' || true; }
pg_alive() { local p; p=$(pg_pid); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
redis_alive() {
  local p; p=$(pid_of redis)
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && grep -q redis-server "/proc/$p/cmdline" 2>/dev/null
}

log_tail() { # name → the last lines of its log, indented
  local f=$LOG_DIR/$1.log
  if [ -s "$f" ]; then
    say "--- last lines of ${f#"$ROOT"/} (this start) ---"
    # Only what the latest start wrote: up marks each start with a "=== <name> start" line.
    awk '/^=== .* start /{n=0} {buf[n++]=$0} END{s=(n>'"${2:-25}"')?n-'"${2:-25}"':0; for(i=s;i<n;i++) print "  " buf[i]}' "$f" >&2
  else say "(no log at ${f#"$ROOT"/})"; fi
}

# Waits until pid $2 (named $1) has exited; SIGKILL after $DOWN_TIMEOUT seconds.
wait_gone() {
  local name=$1 pid=$2 i
  for ((i = 0; i < DOWN_TIMEOUT * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  say "$name (pid $pid) did not stop within ${DOWN_TIMEOUT}s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  return 1
}

stop_service() {
  local name=$1 pid
  if svc_alive "$name"; then
    pid=$(pid_of "$name")
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$name" "$pid" || say "$name (pid $pid) is still alive"
  fi
  rm -f "$RUN_DIR/$name.pid"
}

stop_postgres() {
  if pg_alive; then
    say "stopping postgresql (pid $(pg_pid))"
    as_pg "$PGBIN/pg_ctl" stop -D "$PGDATA_DIR" -m fast -w -t "$DOWN_TIMEOUT" >/dev/null ||
      { local p; p=$(pg_pid); [ -n "$p" ] && kill -QUIT "$p" 2>/dev/null; wait_gone postgresql "$p" || true; }
  fi
}

stop_redis() {
  local pid
  if redis_alive; then
    pid=$(pid_of redis)
    say "stopping redis (pid $pid)"
    # SIGTERM makes Redis flush its append-only file and exit cleanly, like SHUTDOWN.
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone redis "$pid" || true
  fi
  rm -f "$RUN_DIR/redis.pid"
}

# Stops every component in reverse start order. $1 = a list of names to limit to (optional).
stop_all() {
  local only=" ${1:-} " i name
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
    name=${SERVICES[$i]}
    [ -n "${1:-}" ] && [[ $only != *" $name "* ]] && continue
    stop_service "$name"
  done
  if [ -z "${1:-}" ] || [[ $only == *" postgresql "* ]]; then stop_postgres; fi
  if [ -z "${1:-}" ] || [[ $only == *" redis "* ]]; then stop_redis; fi
  return 0
}
