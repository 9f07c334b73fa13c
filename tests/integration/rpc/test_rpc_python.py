#!/usr/bin/python3
"""test_rpc_python: rpc_server seen by an independent client, Python's grpcio (Debian's
python3-grpcio), through its generic API (no generated stubs); messages come from
protoc --python_out run at test time. Starts bin/rpc_test_server on a free loopback port, checks
round trip, metadata, errors and their details, deadlines, limits and health, then stops it with
SIGTERM and expects exit status 0."""
import argparse
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import grpc

ECHO = "/test.v1.EchoService/Echo"
HEALTH = "/grpc.health.v1.Health/Check"
MAX_MSG = 65536
FAILURES = []


def check(cond, what):
    if cond:
        print("  ok   " + what)
    else:
        print("  FAIL " + what)
        FAILURES.append(what)


def load(path, name):
    # By file path: the proto packages "test" and "grpc" would clash with Python's own modules.
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def free_port():
    for _ in range(200):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port < 32768:
            return port
        # Ask for a port below the ephemeral range instead.
        import random
        port = random.randint(20000, 32000)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port")


def wait_port(port, timeout):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--protoc", default="protoc")
    ap.add_argument("--proto-root", action="append", required=True)
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="rpc_py_")
    incs = ["-I" + r for r in a.proto_root] + ["-I/usr/include"]
    subprocess.run([a.protoc] + incs + ["--python_out=" + tmp, "test/v1/echo.proto",
                    "google/rpc/status.proto", "google/rpc/error_details.proto",
                    "grpc/health/v1/health.proto"], check=True)
    echo_pb2 = load(os.path.join(tmp, "test/v1/echo_pb2.py"), "echo_pb2")
    health_pb2 = load(os.path.join(tmp, "grpc/health/v1/health_pb2.py"), "health_pb2")
    status_pb2 = load(os.path.join(tmp, "google/rpc/status_pb2.py"), "status_pb2")
    details_pb2 = load(os.path.join(tmp, "google/rpc/error_details_pb2.py"), "details_pb2")

    port = free_port()
    log = open(os.path.join(tmp, "server.log"), "w")
    srv = subprocess.Popen([a.server, "--addr", "127.0.0.1:%d" % port, "--max-message-bytes",
                            str(MAX_MSG), "--threads", "2", "--grace-ms", "3000"],
                           stdout=log, stderr=log)
    try:
        if not wait_port(port, 10):
            print("server did not start")
            return 1
        ch = grpc.insecure_channel("127.0.0.1:%d" % port)
        echo = ch.unary_unary(ECHO, request_serializer=echo_pb2.EchoRequest.SerializeToString,
                              response_deserializer=echo_pb2.EchoResponse.FromString)
        raw = ch.unary_unary(ECHO)  # bytes in, bytes out
        health = ch.unary_unary(HEALTH,
                                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                                response_deserializer=health_pb2.HealthCheckResponse.FromString)

        print("round trip")
        r, call = echo.with_call(echo_pb2.EchoRequest(text="hi from python", payload=b"\x00\x01\xff"),
                                 timeout=5)
        check(r.text == "hi from python" and r.payload == b"\x00\x01\xff", "echo text and bytes")
        md = dict(call.initial_metadata())
        check(md.get("x-request-id") == r.request_id and len(r.request_id) == 36,
              "x-request-id made by the server and sent back as initial metadata")
        check(3000 < r.deadline_left_ms <= 5100, "timeout arrives as the deadline (%d ms)"
              % r.deadline_left_ms)

        print("metadata")
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        r, call = echo.with_call(echo_pb2.EchoRequest(text="md"), timeout=5, metadata=[
            ("x-request-id", "py-req-1"), ("traceparent", tp), ("authorization", "Bearer xyz"),
            ("x-actor-id", "u-9"), ("x-client-ip", "198.51.100.7"), ("x-user-agent", "py-test/1")])
        check(r.request_id == "py-req-1" and dict(call.initial_metadata()).get("x-request-id") ==
              "py-req-1", "request id round trip")
        check(r.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and r.span_id != "00f067aa0ba902b7",
              "trace id kept, new span")
        check(r.authorization == "Bearer xyz" and r.actor_id == "u-9" and
              r.client_ip == "198.51.100.7" and r.user_agent == "py-test/1", "other metadata")
        r = echo(echo_pb2.EchoRequest(), timeout=5, metadata=[("x-request-id", "bad id <script>")])
        check(r.request_id != "bad id <script>" and len(r.request_id) == 36,
              "unsafe request id replaced")

        print("errors")

        def code_of(fn, *args, **kw):
            try:
                fn(*args, **kw)
                return grpc.StatusCode.OK, None
            except grpc.RpcError as e:
                return e.code(), e

        t0 = time.time()
        code, _ = code_of(ch.unary_unary("/test.v1.EchoService/Missing"), b"", timeout=5)
        check(code == grpc.StatusCode.UNIMPLEMENTED and time.time() - t0 < 1,
              "unknown method: UNIMPLEMENTED at once")
        code, e = code_of(raw, b"\xff\xff\xff\xff\xff", timeout=5)
        check(code == grpc.StatusCode.INVALID_ARGUMENT, "garbage bytes: INVALID_ARGUMENT")
        code, _ = code_of(echo, echo_pb2.EchoRequest(payload=b"x" * (MAX_MSG + 10)), timeout=5)
        check(code == grpc.StatusCode.RESOURCE_EXHAUSTED, "oversized: RESOURCE_EXHAUSTED")
        t0 = time.time()
        code, _ = code_of(echo, echo_pb2.EchoRequest(sleep_ms=1000), timeout=0.001)
        check(code == grpc.StatusCode.DEADLINE_EXCEEDED and time.time() - t0 < 0.5,
              "1 ms deadline: DEADLINE_EXCEEDED promptly")

        code, e = code_of(echo, echo_pb2.EchoRequest(
            fail_code=3, fail_message="bad input", violations=["email:not an email"],
            retry_after_s=9), timeout=5)
        check(code == grpc.StatusCode.INVALID_ARGUMENT and e.details() == "bad input",
              "status and message")
        tmd = dict(e.trailing_metadata()) if e else {}
        st = status_pb2.Status.FromString(tmd.get("grpc-status-details-bin", b""))
        br, ri = details_pb2.BadRequest(), details_pb2.RetryInfo()
        kinds = [d.type_url for d in st.details]
        for d in st.details:
            if d.type_url == "type.googleapis.com/google.rpc.BadRequest":
                d.Unpack(br)
            if d.type_url == "type.googleapis.com/google.rpc.RetryInfo":
                d.Unpack(ri)
        check(st.code == 3 and st.message == "bad input", "grpc-status-details-bin is a Status")
        check(len(br.field_violations) == 1 and br.field_violations[0].field == "email" and
              br.field_violations[0].description == "not an email",
              "BadRequest violations (%s)" % kinds)
        check(ri.retry_delay.seconds == 9, "RetryInfo retry_delay")

        print("health")
        check(health(health_pb2.HealthCheckRequest(service=""), timeout=2).status ==
              health_pb2.HealthCheckResponse.SERVING, "overall SERVING")
        check(health(health_pb2.HealthCheckRequest(service="test.v1.EchoService"), timeout=2).status
              == health_pb2.HealthCheckResponse.SERVING, "per service SERVING")
        code, _ = code_of(health, health_pb2.HealthCheckRequest(service="nope.v1.Nope"), timeout=2)
        check(code == grpc.StatusCode.NOT_FOUND, "unknown service NOT_FOUND")

        print("concurrency")
        futs = [echo.future(echo_pb2.EchoRequest(text="f%d" % i, sleep_ms=2), timeout=20)
                for i in range(300)]
        good = sum(1 for i, f in enumerate(futs) if f.result().text == "f%d" % i)
        check(good == 300, "300 calls in flight, all answered (%d)" % good)

        print("shutdown with calls in flight")
        # One slow call per worker thread (2): calls the core has not handed to a worker yet when
        # shutdown starts are cancelled by the core (its I/O runs on the polling workers).
        time.sleep(1.0)  # let the 1 s handler of the deadline check above finish
        slow = [echo.future(echo_pb2.EchoRequest(text="s", sleep_ms=800), timeout=10)
                for _ in range(2)]
        time.sleep(0.2)
        srv.send_signal(signal.SIGTERM)
        done = [f.result().text == "s" for f in slow]
        check(all(done), "in-flight calls finished during the grace period")
        try:
            rc = srv.wait(10)
        except subprocess.TimeoutExpired:
            rc = None
        check(rc == 0, "server exited 0 after SIGTERM (got %s)" % rc)
        ch.close()
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
        log.close()
    if FAILURES:
        print("server log:\n" + open(os.path.join(tmp, "server.log")).read()[-4000:])
    shutil.rmtree(tmp, ignore_errors=True)  # generated modules and the log: nothing to keep
    print("%d failure(s)" % len(FAILURES))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
