#!/usr/bin/python3
"""Asserts the operational properties of rendered Kubernetes manifests (kubectl kustomize output).

Usage: check_k8s.py <overlay-name> <rendered.yaml>
Checks every identity Deployment: probes (native gRPC for services, HTTP /health and /ready for the
gateway), resources, pod and container securityContext, non-root image user; and that Services,
ConfigMap, Secrets, HPAs, PDBs and NetworkPolicies exist and fit together. Exits 1 listing every
violation.
"""
import sys

import yaml

BINARIES = {"gateway": None, "auth-service": 50051, "user-service": 50052, "permission-service": 50053}
METRICS = {"auth-service": 9091, "user-service": 9092, "permission-service": 9093}
errors = []


def err(msg):
    errors.append(msg)


def by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d and d.get("kind") == kind}


def check_deployment(name, d, ns, overlay):
    spec = d["spec"]
    tmpl = spec["template"]
    labels = tmpl["metadata"].get("labels", {})
    if labels.get("app.kubernetes.io/part-of") != "identity":
        err(f"{name}: pod template lacks app.kubernetes.io/part-of=identity (NetworkPolicies select on it)")
    if spec["selector"]["matchLabels"].get("app.kubernetes.io/name") != name:
        err(f"{name}: selector is not app.kubernetes.io/name={name}")
    if ns and d["metadata"].get("namespace") != ns:
        err(f"{name}: namespace {d['metadata'].get('namespace')!r}, want {ns!r}")
    pod = tmpl["spec"]
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        err(f"{name}: pod securityContext.runAsNonRoot is not true")
    if not isinstance(psc.get("runAsUser"), int) or psc.get("runAsUser") == 0:
        err(f"{name}: pod securityContext.runAsUser must be a non-zero uid")
    if pod.get("automountServiceAccountToken") is not False:
        err(f"{name}: automountServiceAccountToken should be false")
    containers = pod["containers"]
    if len(containers) != 1:
        err(f"{name}: expected one container, got {len(containers)}")
    c = containers[0]
    image = c.get("image", "")
    if name not in image or ":" not in image.rsplit("/", 1)[-1]:
        err(f"{name}: image {image!r} should be the {name} image with an explicit tag")
    if image.endswith(":latest") and overlay == "prod":
        err(f"{name}: image {image!r} uses :latest")
    sc = c.get("securityContext", {})
    if sc.get("allowPrivilegeEscalation") is not False:
        err(f"{name}: allowPrivilegeEscalation is not false")
    if sc.get("readOnlyRootFilesystem") is not True:
        err(f"{name}: readOnlyRootFilesystem is not true")
    if sc.get("capabilities", {}).get("drop") != ["ALL"]:
        err(f"{name}: capabilities.drop is not [ALL]")
    if sc.get("privileged"):
        err(f"{name}: privileged container")
    res = c.get("resources", {})
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in res.get(part, {}):
                err(f"{name}: resources.{part}.{r} missing")
    env = {e["name"]: e for e in c.get("env", [])}
    ports = {p["containerPort"] for p in c.get("ports", [])}
    port = BINARIES[name]
    if port is None:  # gateway: HTTP probes
        for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
            p = c.get(probe, {})
            if p.get("httpGet", {}).get("path") != path:
                err(f"{name}: {probe} should be httpGet {path}, got {p}")
        if 8080 not in ports:
            err(f"{name}: container port 8080 missing")
    else:
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            p = c.get(probe, {})
            if p.get("grpc", {}).get("port") != port:
                err(f"{name}: {probe} should be a native gRPC probe on {port}, got {p}")
        if env.get("LISTEN_ADDR", {}).get("value") != f"0.0.0.0:{port}":
            err(f"{name}: LISTEN_ADDR should be 0.0.0.0:{port}")
        if env.get("METRICS_ADDR", {}).get("value") != f"0.0.0.0:{METRICS[name]}":
            err(f"{name}: METRICS_ADDR should be 0.0.0.0:{METRICS[name]}")
        if {port, METRICS[name]} - ports:
            err(f"{name}: container ports {port} and {METRICS[name]} expected, got {sorted(ports)}")
        role = {"auth-service": "auth_svc", "user-service": "user_svc", "permission-service": "permission_svc"}[name]
        if f"user={role}" not in env.get("DATABASE_URL", {}).get("value", ""):
            err(f"{name}: DATABASE_URL should connect as {role}")
        if "password" in env.get("DATABASE_URL", {}).get("value", ""):
            err(f"{name}: DATABASE_URL must not carry a password")
        if "secretKeyRef" not in env.get("PGPASSWORD", {}).get("valueFrom", {}):
            err(f"{name}: PGPASSWORD should come from a Secret")
    if name == "auth-service":
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        keys_dir = env.get("JWT_KEYS_DIR", {}).get("value")
        if keys_dir not in mounts or not mounts[keys_dir].get("readOnly"):
            err(f"{name}: JWT_KEYS_DIR {keys_dir!r} must be a read-only mount")
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        vol = vols.get(mounts.get(keys_dir, {}).get("name"), {})
        if vol.get("secret", {}).get("secretName") != "identity-jwt-keys":
            err(f"{name}: JWT keys must come from Secret identity-jwt-keys")
        for v in ("BOOTSTRAP_ADMIN_PASSWORD",):
            if "secretKeyRef" not in env.get(v, {}).get("valueFrom", {}):
                err(f"{name}: {v} should come from a Secret")
    if name == "user-service" and "secretKeyRef" not in env.get("PAGE_TOKEN_SECRET", {}).get("valueFrom", {}):
        err(f"{name}: PAGE_TOKEN_SECRET must come from a shared Secret (replicas must agree)")
    env_from = [e.get("configMapRef", {}).get("name") for e in c.get("envFrom", [])]
    if "identity-config" not in env_from:
        err(f"{name}: envFrom identity-config missing")


def main():
    overlay, path = sys.argv[1], sys.argv[2]
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    ns = {"dev": "identity-dev", "prod": "identity"}.get(overlay)
    deps = by_kind(docs, "Deployment")
    for name in BINARIES:
        if name not in deps:
            err(f"Deployment {name} missing")
            continue
        check_deployment(name, deps[name], ns, overlay)
    svcs = by_kind(docs, "Service")
    for name, port in BINARIES.items():
        s = svcs.get(name)
        if not s:
            err(f"Service {name} missing")
            continue
        if s["spec"].get("selector", {}).get("app.kubernetes.io/name") != name:
            err(f"Service {name}: selector does not pick the {name} pods")
        if port and port not in [p["port"] for p in s["spec"]["ports"]]:
            err(f"Service {name}: port {port} missing")
        if s["spec"].get("type", "ClusterIP") != "ClusterIP":
            err(f"Service {name}: type {s['spec']['type']}: only ClusterIP in the base (expose via Ingress)")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    pdbs = by_kind(docs, "PodDisruptionBudget")
    for name in BINARIES:
        h = hpas.get(name)
        if not h or h["spec"]["scaleTargetRef"]["name"] != name:
            err(f"HorizontalPodAutoscaler for {name} missing")
        elif h["spec"]["minReplicas"] > h["spec"]["maxReplicas"]:
            err(f"HPA {name}: minReplicas > maxReplicas")
        p = pdbs.get(name)
        if not p or p["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/name") != name:
            err(f"PodDisruptionBudget for {name} missing")
    if "identity-config" not in by_kind(docs, "ConfigMap"):
        err("ConfigMap identity-config missing")
    secrets = by_kind(docs, "Secret")
    if overlay == "prod":
        for s in ("identity-secrets", "identity-jwt-keys"):
            if s in secrets:
                err(f"prod must not ship the example Secret {s}")
    else:
        for s in ("identity-secrets", "identity-jwt-keys"):
            if s not in secrets:
                err(f"example Secret {s} missing")
    nps = by_kind(docs, "NetworkPolicy")
    deny = nps.get("identity-default-deny")
    if not deny or deny["spec"].get("ingress") or deny["spec"].get("egress") or \
            sorted(deny["spec"].get("policyTypes", [])) != ["Egress", "Ingress"]:
        err("NetworkPolicy identity-default-deny (deny all ingress and egress) missing")
    # Only the gateway may take traffic from anywhere; services only from identity pods (+ metrics).
    for np in nps.values():
        sel = np["spec"]["podSelector"].get("matchLabels", {})
        for rule in np["spec"].get("ingress", []):
            open_to_all = "from" not in rule
            if open_to_all and sel.get("app.kubernetes.io/name") != "gateway":
                err(f"NetworkPolicy {np['metadata']['name']}: admits traffic from anywhere to non-gateway pods")
            ports = {p.get("port") for p in rule.get("ports", [])}
            if open_to_all and ports != {8080}:
                err(f"NetworkPolicy {np['metadata']['name']}: the gateway should take outside traffic on 8080 only")
    svc_in = nps.get("services-ingress")
    if not svc_in:
        err("NetworkPolicy services-ingress missing")
    else:
        grpc_rules = [r for r in svc_in["spec"]["ingress"]
                      if {p["port"] for p in r.get("ports", [])} & {50051, 50052, 50053}]
        for r in grpc_rules:
            for f in r["from"]:
                if f.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/part-of") != "identity" \
                        or "namespaceSelector" in f or "ipBlock" in f:
                    err("services-ingress: gRPC must be admitted only from identity pods")
    egress = nps.get("identity-egress")
    if not egress:
        err("NetworkPolicy identity-egress missing")
    else:
        ports = {p.get("port") for r in egress["spec"]["egress"] for p in r.get("ports", [])}
        want_db = 6432 if overlay == "prod" else 5432
        for p, what in ((53, "DNS"), (want_db, "PostgreSQL/PgBouncer"), (6379, "Redis"), (50051, "gRPC")):
            if p not in ports:
                err(f"identity-egress: no egress to {what} (port {p})")
    if overlay == "prod":
        cm = by_kind(docs, "ConfigMap")["identity-config"]["data"]
        if "pgbouncer" not in cm.get("DB_HOST", ""):
            err("prod: DB_HOST should point at PgBouncer")
        if cm.get("REDIS_URL", "").startswith("redis://redis:"):
            err("prod: REDIS_URL still points at the in-cluster dev Redis")
        if any(d["kind"] == "StatefulSet" for d in docs):
            err("prod: must not run its own PostgreSQL")
        for name in BINARIES:
            if name in hpas and hpas[name]["spec"]["minReplicas"] < 2:
                err(f"prod: HPA {name} minReplicas < 2")
    for e in errors:
        print(f"FAIL [{overlay}]: {e}")
    if errors:
        return 1
    print(f"ok [{overlay}]: {len(docs)} objects, {len(deps)} Deployments checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
