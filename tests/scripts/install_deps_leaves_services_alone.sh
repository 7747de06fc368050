#!/usr/bin/env bash
# scripts/install-deps.sh leaves alone a PostgreSQL it did not install: a cluster of the machine's
# own (Debian's postgresql service), running before, still runs afterwards. The cluster is one
# made for this check, on a free port, and dropped again. Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh # as_root
cluster=install_deps_check
online() { pg_lsclusters --no-header 15 "$cluster" 2>/dev/null | grep -q " online "; }
as_root pg_dropcluster --stop 15 "$cluster" >/dev/null 2>&1 || true # left by a killed run
trap 'as_root pg_dropcluster --stop 15 "$cluster" >/dev/null 2>&1 || true' EXIT
as_root pg_createcluster 15 "$cluster" --start -- --no-sync >/dev/null
online || { echo "FAILED: the cluster 15/$cluster did not start" >&2; exit 1; }
scripts/install-deps.sh >/dev/null
if ! online; then
  echo "FAILED: scripts/install-deps.sh stopped the machine's PostgreSQL (cluster 15/$cluster)" >&2
  exit 1
fi
echo "install-deps.sh leaves the machine's PostgreSQL alone: ok"
