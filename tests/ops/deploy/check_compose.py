#!/usr/bin/python3
"""Asserts the properties of the docker-compose stack from `docker-compose config` output.

Usage: check_compose.py <rendered-compose.yaml> <.env.example>
Only the gateway publishes a port; every long-running container has a healthcheck; start order uses
service_healthy; all four binaries build from deploy/docker/Dockerfile with their own target;
postgres gets init.sql with POSTGRES_DB=identity; .env.example names every contract variable.
"""
import re
import sys

import yaml

CONTRACT_VARS = """DB_POOL_SIZE DB_POOL_WAIT_MS DB_STATEMENT_TIMEOUT_MS SLOW_QUERY_MS REDIS_TIMEOUT_MS RPC_THREADS
RPC_MAX_MESSAGE_BYTES RPC_MAX_INFLIGHT SHUTDOWN_GRACE_MS LOG_LEVEL JWT_ISSUER JWT_AUDIENCE JWT_LEEWAY_SEC
ACCESS_TOKEN_TTL_SEC REFRESH_TOKEN_TTL_SEC SESSION_MAX_LIFETIME_SEC ARGON2_MEMORY_KIB ARGON2_ITERATIONS HASH_WORKERS
HASH_QUEUE LOGIN_MAX_FAILURES LOGIN_LOCKOUT_WINDOW_SEC BOOTSTRAP_ADMIN_EMAIL BOOTSTRAP_ADMIN_PASSWORD USER_CACHE_TTL_SEC
PAGE_TOKEN_SECRET CORS_ALLOWED_ORIGINS RATE_LIMIT_AUTH_RPM RATE_LIMIT_ANON_RPM RATE_LIMIT_USER_RPM REQUEST_TIMEOUT_MS
MAX_BODY_BYTES COOKIE_SECURE HTTP_THREADS LISTEN_ADDR METRICS_ADDR DATABASE_URL REDIS_URL JWT_KEYS_DIR
AUTH_SERVICE_ADDR USER_SERVICE_ADDR PERMISSION_SERVICE_ADDR""".split()
BINARIES = ["gateway", "auth-service", "user-service", "permission-service"]
errors = []


def main():
    cfg = yaml.safe_load(open(sys.argv[1]))
    env_example = open(sys.argv[2]).read()
    svcs = cfg["services"]
    for need in ["postgres", "redis"] + BINARIES:
        if need not in svcs:
            errors.append(f"service {need} missing")
    for name, s in svcs.items():
        if s.get("ports") and name != "gateway":
            errors.append(f"{name} publishes ports {s['ports']}: only the gateway may")
        if name == "jwt-keygen":
            continue
        if "healthcheck" not in s or not s["healthcheck"].get("test"):
            errors.append(f"{name} has no healthcheck")
    gw = svcs.get("gateway", {})
    if [str(p.get("target") if isinstance(p, dict) else p).split(":")[-1] for p in gw.get("ports", [])] != ["8080"]:
        errors.append(f"gateway should publish container port 8080, got {gw.get('ports')}")
    for name in BINARIES:
        s = svcs.get(name, {})
        b = s.get("build", {})
        if not str(b.get("dockerfile", "")).endswith("deploy/docker/Dockerfile") or b.get("target") != name:
            errors.append(f"{name}: should build deploy/docker/Dockerfile target {name}, got {b}")
        test = s.get("healthcheck", {}).get("test", [])
        if test[-2:] != [name, "--health-check"]:
            errors.append(f"{name}: healthcheck should run `{name} --health-check`, got {test}")
        deps = s.get("depends_on", {})
        if not isinstance(deps, dict) or not deps:
            errors.append(f"{name}: depends_on with conditions missing")
            continue
        for dep, cond in deps.items():
            want = "service_completed_successfully" if dep == "jwt-keygen" else "service_healthy"
            if cond.get("condition") != want:
                errors.append(f"{name}: depends_on {dep} should wait for {want}")
        if "redis" not in deps:
            errors.append(f"{name}: should wait for redis")
        env = s.get("environment", {})
        if name != "gateway":
            if "postgres" not in deps:
                errors.append(f"{name}: should wait for postgres")
            if "password" in str(env.get("DATABASE_URL", "")):
                errors.append(f"{name}: DATABASE_URL must not carry the password (PGPASSWORD does)")
            if not env.get("PGPASSWORD"):
                errors.append(f"{name}: PGPASSWORD not set")
    auth = svcs.get("auth-service", {})
    for dep in ("user-service", "permission-service", "jwt-keygen"):
        if dep not in auth.get("depends_on", {}):
            errors.append(f"auth-service should start after {dep}")
    for dep in ("auth-service", "user-service", "permission-service"):
        if dep not in gw.get("depends_on", {}):
            errors.append(f"gateway should start after {dep}")
    pg = svcs.get("postgres", {})
    if not str(pg.get("image", "")).startswith("postgres:15"):
        errors.append("postgres should be postgres:15")
    if pg.get("environment", {}).get("POSTGRES_DB") != "identity":
        errors.append("postgres: POSTGRES_DB must be identity (init.sql runs in it)")
    vols = [str(v.get("source", "")) + ":" + str(v.get("target", "")) if isinstance(v, dict) else v for v in pg.get("volumes", [])]
    if not any("deploy/postgres/init.sql" in v and "/docker-entrypoint-initdb.d/" in v for v in vols):
        errors.append(f"postgres: deploy/postgres/init.sql not mounted into /docker-entrypoint-initdb.d ({vols})")
    if not str(svcs.get("redis", {}).get("image", "")).startswith("redis:7"):
        errors.append("redis should be redis:7")
    names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", env_example, re.M)) | set(re.findall(r"\b([A-Z][A-Z0-9_]{3,})\b", env_example))
    for v in CONTRACT_VARS:
        if v not in names:
            errors.append(f".env.example does not mention {v}")
    for e in errors:
        print("FAIL:", e)
    if errors:
        return 1
    print(f"ok: compose has {len(svcs)} services; only the gateway is published")
    return 0


if __name__ == "__main__":
    sys.exit(main())
