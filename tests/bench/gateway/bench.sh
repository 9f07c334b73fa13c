#!/usr/bin/env bash
# Gateway benchmark, side by side in one run: the C stack (release build: permission, user, auth,
# gateway on a private PostgreSQL + Redis started by tests/support/harness), the Express peer
# (../shared/peers/express, WORKERS=2) and nginx serving a static JSON (the HTTP ceiling).
#   tests/bench/gateway/bench.sh [duration]      (default 10s; REPEAT=n runs each wrk n times)
# Env: BUILD (default build-gateway-rel, built with -DCMAKE_BUILD_TYPE=Release), EXPRESS_DIR,
# SKIP_EXPRESS=1, SKIP_NGINX=1, ONLY=<name part> (e.g. ONLY=me: only the runs whose name has it), CONNS (64), HTTP_THREADS (2), KEEP_LOGS=1 (keep the temp dir),
# IDLE_CONNS=n (n more keep-alive connections to the C gateway, idle during the runs),
# PERF=1 (C runs: context switches and syscalls per request of gateway, user-service and Redis,
# counted by perf's software events; steadier than CPU time on a noisy host),
# CALLGRIND=1 (gateway and user-service run under valgrind's callgrind: C runs report user-space
# instructions per request, exact enough to A/B a change on a noisy host; throughput is meaningless),
# MEMCHECK=1 (gateway and user-service under valgrind's memcheck: their reports are printed at exit,
# nothing printed = clean; use CONNS=8 SKIP_EXPRESS=1 SKIP_NGINX=1). Every process started here is
# stopped at exit (by PID).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
BUILD=${BUILD:-$root/build-gateway-rel}
EXPRESS_DIR=${EXPRESS_DIR:-$root/../shared/peers/express}
[ -d "$EXPRESS_DIR" ] || EXPRESS_DIR=/work/shared/peers/express
D=${1:-10s}
REPEAT=${REPEAT:-1}
CONNS=${CONNS:-64}
W=$(mktemp -d /tmp/gwbench.XXXXXX)
export HARNESS_DIR=$W/harness
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  if [ -n "${MEMCHECK:-}" ]; then
    for f in "$W"/vg.*; do [ -s "$f" ] && { echo "== valgrind report $f"; cat "$f"; }; done
  fi
  "$root/tests/support/harness" stop >/dev/null 2>&1 || true
  if [ -z "${SKIP_EXPRESS:-}" ] && [ -n "${express_started:-}" ]; then (cd "$EXPRESS_DIR" && ./stop.sh >/dev/null 2>&1 || true); fi
  if [ -n "${KEEP_LOGS:-}" ]; then echo "== logs in $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
# wrk drives the load; nginx is the HTTP ceiling. Installed when missing (Debian, as root).
need=()
command -v wrk >/dev/null || need+=(wrk)
[ -n "${SKIP_NGINX:-}" ] || command -v nginx >/dev/null || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
    { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
  # The package's own nginx service is not ours to run.
  if [[ " ${need[*]} " == *" nginx-light "* ]]; then
    systemctl disable --now nginx >/dev/null 2>&1 || service nginx stop >/dev/null 2>&1 || true
  fi
fi
for b in gateway auth-service user-service permission-service; do
  [ -x "$BUILD/bin/$b" ] || { echo "missing $BUILD/bin/$b (cmake -B $BUILD -DCMAKE_BUILD_TYPE=Release && cmake --build $BUILD --target $b)" >&2; exit 1; }
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

"$root/tests/support/harness" start >/dev/null
. "$HARNESS_DIR/state"
REDIS_PID=$(cat "$HARNESS_DIR/redis.pid")
PSQL="/usr/lib/postgresql/15/bin/psql -q -h 127.0.0.1 -p $PGPORT -U postgres"
$PSQL -c "DROP DATABASE IF EXISTS gwbench" -c "CREATE DATABASE gwbench" >/dev/null
$PSQL -d gwbench -f "$root/deploy/postgres/init.sql" >/dev/null
P_AUTH=$(free_port); P_USER=$(free_port); P_PERM=$(free_port); P_GW=$(free_port)
vg=(); [ -z "${CALLGRIND:-}" ] || vg=(valgrind -q --tool=callgrind --instr-atstart=no "--callgrind-out-file=$W/cg.%p")
[ -z "${MEMCHECK:-}" ] || vg=(valgrind -q --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite "--log-file=$W/vg.%p")
common=(REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0 LOG_LEVEL=warn)
db() { echo "host=127.0.0.1 port=$PGPORT dbname=gwbench user=$1"; }
mkdir -p "$W/keys"
openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out "$W/keys/20260101T000000Z.pem"
env "${common[@]}" LISTEN_ADDR=127.0.0.1:$P_PERM METRICS_ADDR=127.0.0.1:0 DATABASE_URL="$(db permission_svc)" \
  "$BUILD/bin/permission-service" >>"$W/stack.log" 2>&1 & pids+=($!)
env "${common[@]}" LISTEN_ADDR=127.0.0.1:$P_USER METRICS_ADDR=127.0.0.1:0 DATABASE_URL="$(db user_svc)" \
  "${vg[@]}" "$BUILD/bin/user-service" >>"$W/stack.log" 2>&1 & pids+=($!)
PID_USER=$!
wait_port "$P_PERM"; wait_port "$P_USER"
env "${common[@]}" LISTEN_ADDR=127.0.0.1:$P_AUTH METRICS_ADDR=127.0.0.1:0 DATABASE_URL="$(db auth_svc)" \
  USER_SERVICE_ADDR=127.0.0.1:$P_USER PERMISSION_SERVICE_ADDR=127.0.0.1:$P_PERM JWT_KEYS_DIR="$W/keys" \
  "$BUILD/bin/auth-service" >>"$W/stack.log" 2>&1 & pids+=($!)
wait_port "$P_AUTH"
# Limits raised so the limiter runs on every request but never rejects (as the Express bench does).
env "${common[@]}" LISTEN_ADDR=127.0.0.1:$P_GW AUTH_SERVICE_ADDR=127.0.0.1:$P_AUTH \
  USER_SERVICE_ADDR=127.0.0.1:$P_USER PERMISSION_SERVICE_ADDR=127.0.0.1:$P_PERM \
  RATE_LIMIT_AUTH_RPM=100000000 RATE_LIMIT_ANON_RPM=100000000 RATE_LIMIT_USER_RPM=100000000 \
  HTTP_THREADS=${HTTP_THREADS:-2} "${vg[@]}" "$BUILD/bin/gateway" >>"$W/stack.log" 2>&1 & pids+=($!)
PID_GW=$!
wait_port "$P_GW"
GW=http://127.0.0.1:$P_GW
for _ in $(seq 1 100); do curl -fs "$GW/ready" >/dev/null && break; sleep 0.1; done
if [ -n "${IDLE_CONNS:-}" ]; then # many keep-alive clients that are idle besides wrk's busy ones
  python3 "$here/idle.py" 127.0.0.1 "$P_GW" "$IDLE_CONNS" >>"$W/stack.log" 2>&1 & pids+=($!)
  for _ in $(seq 1 100); do grep -q "idle.py:" "$W/stack.log" && break; sleep 0.1; done
fi

run() { # name url script [env...]
  local name=$1 url=$2 script=$3; shift 3
  if [ -n "${ONLY:-}" ] && [[ "$name" != *"$ONLY"* ]]; then return 0; fi
  env "$@" wrk -t1 -c"$CONNS" -d3s ${script:+-s "$script"} "$url" >/dev/null 2>&1 || true
  for _ in $(seq 1 "$REPEAT"); do
    echo "-- $name: wrk -t1 -c$CONNS -d$D --latency ${script:+-s $(basename "$script")} $url"
    cpu_snap >"$W/cpu.before"
    perf_start "$name"
    cg_start "$name"
    env "$@" wrk -t1 -c"$CONNS" -d"$D" --latency ${script:+-s "$script"} "$url" >"$W/wrk.out" 2>&1 \
      || { echo "   wrk failed:"; tail -3 "$W/wrk.out"; tail -5 "$W/stack.log"; continue; }
    cpu_snap >"$W/cpu.after"
    perf_stop
    cg_stop
    grep -E "Requests/sec|Latency  |  50%|  99%|Non-2xx|Socket errors|statuses:" "$W/wrk.out" || true
    cpu_report "$(awk '/Requests\/sec/{print $2}' "$W/wrk.out")"
    perf_report "$(awk '/Requests\/sec/{print $2}' "$W/wrk.out")"
    cg_report "$(awk '/requests in/{print $1}' "$W/wrk.out")"
  done
}
# PERF=1: one perf stat per process of the C stack, for the length of the wrk run.
perf_pids=()
perf_start() {
  perf_pids=()
  [ -n "${PERF:-}" ] && [[ "$1" == C* ]] && command -v perf >/dev/null || return 0
  local p
  for p in "gateway:$PID_GW" "user-service:$PID_USER" "redis-server:$REDIS_PID"; do
    perf stat -x, -e context-switches,raw_syscalls:sys_enter -p "${p#*:}" -o "$W/perf.${p%%:*}" 2>/dev/null &
    perf_pids+=($!)
  done
}
perf_stop() {
  local p
  for p in "${perf_pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${perf_pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
# CALLGRIND=1: instrumentation is on only while wrk measures; each run ends with a dump.
cg_on=
cg_start() {
  cg_on=
  [ -n "${CALLGRIND:-}" ] && [[ "$1" == C* ]] || return 0
  cg_on=1
  rm -f "$W"/cg.*
  callgrind_control -z "$PID_GW" >/dev/null; callgrind_control -z "$PID_USER" >/dev/null
  callgrind_control -i on "$PID_GW" >/dev/null; callgrind_control -i on "$PID_USER" >/dev/null
}
cg_stop() {
  [ -n "$cg_on" ] || return 0
  callgrind_control -i off "$PID_GW" >/dev/null; callgrind_control -i off "$PID_USER" >/dev/null
  callgrind_control -d "$PID_GW" >/dev/null; callgrind_control -d "$PID_USER" >/dev/null
}
cg_report() { # requests
  [ -n "$cg_on" ] || return 0
  local line="   instructions per request:" who pid f
  for who in gateway:$PID_GW user-service:$PID_USER; do
    pid=${who#*:}; f=$(ls -t "$W"/cg."$pid".* 2>/dev/null | head -1)
    [ -n "$f" ] || continue
    line+=$(awk -v n="$1" -v w="${who%%:*}" '/^(summary|totals):/{t=$2} END{if (n>0) printf " %s %.0f;", w, t/n}' "$f")
  done
  echo "$line (callgrind, $1 requests)"
}
perf_report() { # req/s
  [ ${#perf_pids[@]} -gt 0 ] || return 0
  local n f line="   per request:"
  n=$(awk -v rps="$1" -v d="$D" 'BEGIN{sub(/s$/,"",d); print rps*d}')
  for f in gateway user-service redis-server; do
    line+=$(awk -F, -v n="$n" -v who="$f" '$3=="context-switches"{cs=$1} $3=="raw_syscalls:sys_enter"{sc=$1}
      END{if (n>0) printf " %s %.2f cs %.2f syscalls;", who, cs/n, sc/n}' "$W/perf.$f")
  done
  echo "$line"
}
# CPU seconds (utime+stime) of every process, to report CPU microseconds per request by process.
cpu_snap() {
  for d in /proc/[0-9]*; do
    [ -r "$d/stat" ] || continue
    awk -v tck="$(getconf CLK_TCK)" '{sub(/^[0-9]+ \(/,""); n=$0; sub(/\).*/,"",n); sub(/^[^)]*\) /,"");
      split($0,f," "); printf "%s %s %.4f\n", FILENAME, n, (f[12]+f[13])/tck}' "$d/stat" 2>/dev/null
  done
}
cpu_report() { # req/s: prints µs of CPU per request for the processes that used > 2 % of it
  local rps=$1 secs; secs=$(awk -v d="$D" 'BEGIN{sub(/s$/,"",d); print d+0}')
  awk -v rps="$rps" -v secs="$secs" 'NR==FNR{b[$1]=$3; next}
    {d=$3-b[$1]; if (d>0) {u[$2]+=d}}
    END{t=0; for(k in u) t+=u[k]; n=rps*secs; if(n<=0) exit;
      line=sprintf("   cpu per request: total %.0f us", t*1e6/n);
      for(k in u) if(u[k]>t*0.02) line=line sprintf(", %s %.0f", k, u[k]*1e6/n); print line}' \
    "$W/cpu.before" "$W/cpu.after"
}
register() { # base → sets TOKEN USER_ID EMAIL PASSWORD
  EMAIL="bench-$RANDOM$RANDOM@example.com"; PASSWORD="bench-password-1"
  local out
  out=$(curl -fsS -X POST "$1/v1/auth/register" -H 'Content-Type: application/json' \
    -d "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\",\"display_name\":\"Bench\"}")
  TOKEN=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  USER_ID=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["user"]["id"])')
}
echo "== $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
echo "== C gateway (HTTP_THREADS=${HTTP_THREADS:-2}) $GW"
register "$GW"
run "C /v1/users/me" "$GW/v1/users/me" "$here/me.lua" TOKEN="$TOKEN"
run "C /v1/permissions:check" "$GW/v1/permissions:check" "$here/check.lua" TOKEN="$TOKEN" USER_ID="$USER_ID"
run "C /v1/auth/login" "$GW/v1/auth/login" "$here/login.lua" EMAIL="$EMAIL" PASSWORD="$PASSWORD"
run "C /health" "$GW/health" ""

if [ -z "${SKIP_EXPRESS:-}" ]; then
  EX=http://127.0.0.1:${EXPRESS_PORT:-18080}
  echo "== Express peer (WORKERS=2) $EX"
  (cd "$EXPRESS_DIR" && WORKERS=2 RATE_LIMIT_MAX=1000000000 RATE_LIMIT_AUTH_MAX=1000000000 ./run.sh >/dev/null)
  express_started=1
  register "$EX"
  run "Express /v1/users/me" "$EX/v1/users/me" "$here/me.lua" TOKEN="$TOKEN"
  run "Express /v1/permissions:check" "$EX/v1/permissions:check" "$here/check.lua" TOKEN="$TOKEN" USER_ID="$USER_ID"
  run "Express /v1/auth/login" "$EX/v1/auth/login" "$here/login.lua" EMAIL="$EMAIL" PASSWORD="$PASSWORD"
  run "Express /health" "$EX/health" ""
fi

if [ -z "${SKIP_NGINX:-}" ] && command -v nginx >/dev/null; then
  NP=$(free_port); mkdir -p "$W/nginx/tmp"
  sed -e "s#NGINX_DIR#$W/nginx#g" -e "s#NGINX_PORT#$NP#g" "$here/nginx.conf" >"$W/nginx/nginx.conf"
  nginx -c "$W/nginx/nginx.conf" -p "$W/nginx" 2>>"$W/nginx/error.log" & pids+=($!)
  wait_port "$NP"
  echo "== nginx static JSON (1 worker)"
  run "nginx static" "http://127.0.0.1:$NP/health" ""
fi
