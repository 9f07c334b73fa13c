#!/bin/sh
# Runtime benchmark: rpc_load against echo_raw and against rpc_server (Health/Check), same run.
B=${B:-/work/main/build-rpc-rel/bin}
D=${D:-8}
uptime
$B/echo_raw --addr 127.0.0.1:24101 --threads 2 > ${TMPDIR:-/tmp}/echo_raw.out 2>&1 &
RAW=$!
$B/rpc_test_server --addr 127.0.0.1:24102 --threads 2 --log-level info 2> ${TMPDIR:-/tmp}/rpc_test_server.log &
OURS=$!
sleep 1
for round in 1 2 3 4; do
  timeout 30 $B/rpc_load --target 127.0.0.1:24101 --inflight 64 --duration $D | sed "s/^/raw  r$round: /"
  timeout 30 $B/rpc_load --target 127.0.0.1:24102 --inflight 64 --duration $D | sed "s/^/ours r$round: /"
done
if [ -n "$ECHO_REQ" ]; then
  timeout 30 $B/rpc_load --target 127.0.0.1:24102 --method /test.v1.EchoService/Echo --request-file $ECHO_REQ --inflight 64 --duration $D | sed "s/^/ours Echo+log: /"
fi
kill $RAW $OURS
wait $RAW $OURS
uptime
