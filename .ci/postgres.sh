#!/usr/bin/env bash
# CI: a PostgreSQL + PostGIS server for tests/test_postgis.py, on 127.0.0.1:5432.
# Installs the Debian packages only when missing, creates (or starts) a cluster, and makes
# role tiledelta (password tiledelta) owning database tiledelta_test with PostGIS.
# Idempotent: safe to run again on a machine where it already ran. Needs root.
set -euo pipefail

PORT=5432
ROLE=tiledelta
PASSWORD=tiledelta
DB=tiledelta_test
export DEBIAN_FRONTEND=noninteractive

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  apt-get install -y -qq "$@" >/dev/null
}

if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
  apt_install postgresql
fi
VER="$(ls /usr/lib/postgresql | sort -n | tail -1)"   # 15 on Debian bookworm
if ! ls /usr/share/postgresql/"$VER"/extension/postgis.control >/dev/null 2>&1; then
  apt_install "postgresql-$VER-postgis-3"
fi

# A cluster on $PORT: the existing "main" one, or a new one.
if ! pg_lsclusters -h | awk -v v="$VER" '$1 == v && $2 == "main"' | grep -q .; then
  pg_createcluster -p "$PORT" "$VER" main >/dev/null
fi
if [ "$(pg_conftool -s "$VER" main show port 2>/dev/null || echo)" != "$PORT" ]; then
  pg_conftool "$VER" main set port "$PORT"
fi
if ! pg_lsclusters -h | awk -v v="$VER" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
  pg_ctlcluster "$VER" main start
fi
for _ in $(seq 1 60); do
  pg_isready -q -h 127.0.0.1 -p "$PORT" && break
  sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p "$PORT" || {
  echo "postgres: the server on 127.0.0.1:$PORT did not come up" >&2
  tail -n 20 "/var/log/postgresql/postgresql-$VER-main.log" >&2 || true
  exit 1
}

as_postgres() { PGOPTIONS="-c client_min_messages=warning" runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" "$@"; }
as_postgres -d postgres >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$ROLE') THEN
    CREATE ROLE $ROLE LOGIN PASSWORD '$PASSWORD';
  ELSE
    ALTER ROLE $ROLE LOGIN PASSWORD '$PASSWORD';
  END IF;
END \$\$;
SQL
if [ -z "$(as_postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]; then
  as_postgres -d postgres -c "CREATE DATABASE $DB OWNER $ROLE" >/dev/null
fi
as_postgres -d "$DB" -c "CREATE EXTENSION IF NOT EXISTS postgis" >/dev/null
postgis="$(PGPASSWORD="$PASSWORD" psql -X -tA -h 127.0.0.1 -p "$PORT" -U "$ROLE" -d "$DB" \
  -c "SELECT extversion FROM pg_extension WHERE extname = 'postgis'")"
echo "postgres: PostgreSQL $VER + PostGIS $postgis ready at 127.0.0.1:$PORT (database $DB, role $ROLE)"
