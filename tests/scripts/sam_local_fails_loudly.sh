#!/usr/bin/env bash
# scripts/sam-local.sh must fail, never skip, when no Docker engine can be had: here `docker info`
# fails and the dockerd it would start exits at once; and scripts/test.sh, run by someone who
# cannot start one, says so at once. Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
fake="$(mktemp -d)"
trap 'rm -rf "$fake"' EXIT
for tool in docker dockerd; do
  printf '#!/bin/sh\necho "fake %s: no engine here" >&2\nexit 1\n' "$tool" >"$fake/$tool"
  chmod +x "$fake/$tool"
done
status=0
PATH="$fake:$PATH" scripts/sam-local.sh --stand-in-image >"$fake/out" 2>&1 || status=$?
if [ "$status" -ne 1 ] || ! grep -q "error: dockerd did not start\|error: no Docker engine answers" "$fake/out"; then
  echo "FAILED: sam-local.sh without Docker exited $status:" >&2
  tail -n 20 "$fake/out" >&2
  exit 1
fi
# Not a user-supplied remote engine either: only a local socket can be given host networking.
status=0
DOCKER_HOST=tcp://127.0.0.1:1 scripts/sam-local.sh >"$fake/out" 2>&1 || status=$?
if [ "$status" -eq 0 ] || ! grep -q "only a local engine (a unix socket)" "$fake/out"; then
  echo "FAILED: sam-local.sh with an unreachable DOCKER_HOST exited $status:" >&2
  tail -n 20 "$fake/out" >&2
  exit 1
fi
# scripts/test.sh says so before anything else when it runs as a user other than root (who cannot
# start dockerd): as the `postgres` OS user when we are root.
chmod 755 "$fake"
as_user=()
[ "$(id -u)" -ne 0 ] || as_user=(runuser -u postgres --)
status=0
"${as_user[@]}" env PATH="$fake:$PATH" scripts/test.sh >"$fake/out" 2>&1 || status=$?
if [ "$status" -ne 1 ] || ! grep -q "error: no Docker engine answers" "$fake/out" || grep -q "^==> " "$fake/out"; then
  echo "FAILED: test.sh as a user without Docker exited $status, not at once:" >&2
  tail -n 20 "$fake/out" >&2
  exit 1
fi
echo "sam-local.sh and test.sh fail loudly without Docker: ok"
