-- Roles and schemas of the identity backend: one login role per service, each owning only its schema.
-- Used by the local stack, the test harness and docker-compose (as /docker-entrypoint-initdb.d).
-- Run as a superuser, connected to the `identity` database. Idempotent.
-- Passwords: none here. The local stack and the harness use trust on 127.0.0.1; compose and Kubernetes
-- set them afterwards with ALTER ROLE from their secrets (see docs/OPERATIONS.md).
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'auth_svc') THEN CREATE ROLE auth_svc LOGIN; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'user_svc') THEN CREATE ROLE user_svc LOGIN; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'permission_svc') THEN CREATE ROLE permission_svc LOGIN; END IF;
END
$$;

REVOKE ALL ON SCHEMA public FROM PUBLIC;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

CREATE SCHEMA IF NOT EXISTS auth AUTHORIZATION auth_svc;
CREATE SCHEMA IF NOT EXISTS users AUTHORIZATION user_svc;
CREATE SCHEMA IF NOT EXISTS permissions AUTHORIZATION permission_svc;

-- Each role sees only its own schema.
REVOKE ALL ON SCHEMA auth FROM PUBLIC;
REVOKE ALL ON SCHEMA users FROM PUBLIC;
REVOKE ALL ON SCHEMA permissions FROM PUBLIC;
ALTER ROLE auth_svc SET search_path = auth;
ALTER ROLE user_svc SET search_path = users;
ALTER ROLE permission_svc SET search_path = permissions;
