#!/bin/bash
# docker-compose only: the postgres image runs this after init.sql (both in
# /docker-entrypoint-initdb.d, first start of an empty volume). It gives each service role the
# password from the container's environment (AUTH_DB_PASSWORD, USER_DB_PASSWORD,
# PERMISSION_DB_PASSWORD); psql's :'var' quoting keeps any character safe. The local stack and the
# test harness do not use it (trust on 127.0.0.1). To change a password later:
#   docker-compose exec postgres psql -U postgres -d identity -c "ALTER ROLE auth_svc PASSWORD '...'"
for pair in auth_svc:AUTH_DB_PASSWORD user_svc:USER_DB_PASSWORD permission_svc:PERMISSION_DB_PASSWORD; do
  role=${pair%%:*}
  var=${pair#*:}
  pw=${!var:-}
  if [ -z "$pw" ]; then
    echo "set-passwords.sh: $var is not set; role $role would have no password" >&2
    exit 1
  fi
  psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" \
    --dbname "${POSTGRES_DB:-identity}" --set=role="$role" --set=pw="$pw" <<'SQL'
ALTER ROLE :"role" PASSWORD :'pw';
SQL
done
