#!/usr/bin/env bash
# scripts/install-deps.sh leaves alone a PostgreSQL it did not install: the machine's own cluster
# (Debian's 15/main), running before, still runs afterwards. Run by scripts/test.sh; the cluster is
# started for the test if it was down, and stopped again only then.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }
online() { pg_lsclusters --no-header 15 main 2>/dev/null | grep -q " online "; }
started=0
if ! online; then
  as_root pg_ctlcluster 15 main start
  started=1
fi
trap '[ "$started" = 0 ] || ! online || as_root pg_ctlcluster 15 main stop' EXIT
online || { echo "FAILED: the cluster 15/main did not start" >&2; exit 1; }
scripts/install-deps.sh >/dev/null
if ! online; then
  echo "FAILED: scripts/install-deps.sh stopped the machine's PostgreSQL cluster 15/main" >&2
  exit 1
fi
echo "install-deps.sh leaves the machine's PostgreSQL alone: ok"
