#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo need, when they are missing. Go and
# Python come with the machine; the control plane is built from the Go module proxy by
# cluster/build.sh.
set -euo pipefail
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v setsid >/dev/null || need+=(util-linux)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# promtool checks the alert rules; the monitoring e2e tests run the Prometheus server.
{ command -v promtool && command -v prometheus; } >/dev/null || need+=(prometheus)
# The database e2e tests run a real PostgreSQL server (the newest major version installed
# under /usr/lib/postgresql, dropped to `nobody` through setpriv when run as root), take dumps
# with pg_dump, and the Jobs' scripts run psql.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
{ command -v psql && command -v pg_dump; } >/dev/null || need+=(postgresql-client)
# The Jobs' one-transaction check is an awk program (mawk, as in the postgres images).
command -v awk >/dev/null || need+=(mawk)
# The database e2e tests write their down.sql files with the real Prisma CLI
# (tests/e2e/prisma_cli.py), installed with npm from tests/e2e/prisma/package-lock.json.
{ command -v node && command -v npm; } >/dev/null || need+=(nodejs npm)
# The image is built with buildah on a Debian-made base (mmdebstrap) and run with podman on
# runc: scripts/image.sh, tests/e2e/test_image.py.
for tool in buildah podman runc mmdebstrap newuidmap; do
  command -v "$tool" >/dev/null || need+=(buildah podman runc mmdebstrap uidmap)
done
for helper in netavark aardvark-dns; do
  [[ -x "/usr/lib/podman/$helper" ]] || need+=("$helper")
done
if ((${#need[@]})); then
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
command -v go >/dev/null || { echo "Go is required to build the local control plane" >&2; exit 1; }
