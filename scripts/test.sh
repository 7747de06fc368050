#!/usr/bin/env bash
# Runs every test: formatting, lints, unit tests, the integration tests against a real local stack
# (TLS PostgreSQL 15, PgBouncer, moto; each started and stopped by the tests themselves), the SAM
# template checks, and the function end to end twice: under cargo lambda (scripts/local.sh) and
# under the real SAM CLI in Docker (scripts/sam-local.sh). Installs what is missing first. This is
# what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Each step's line shows the seconds since the start, so a slow CI run shows where it went.
step() { echo "==> [${SECONDS}s] $*"; }

# The last step (scripts/sam-local.sh) needs Docker. As root it starts Debian's dockerd itself; any
# other user needs an engine running that they can reach: said now, not after the other steps.
if [ "$(id -u)" -ne 0 ] && ! docker info >/dev/null 2>&1; then
  echo "error: no Docker engine answers ('docker info' fails). As a user other than root, start one" \
    "you can reach first (scripts/install-deps.sh --with-docker installs Debian's docker.io; then" \
    "e.g. 'sudo service docker start' and 'sudo usermod -aG docker \$USER', and log in again)." >&2
  exit 1
fi

scripts/install-deps.sh --with-docker
export PATH="$PWD/.venv/bin:$HOME/.cargo/bin:$PATH"

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo test"
cargo test --workspace --locked
step "IAM auth tokens: tests/golden/iam-tokens.json is what botocore makes"
.venv/bin/python tests/golden/iam_tokens.py --check
step "SAM template"
scripts/lint-template.sh
step "scripts/install-deps.sh leaves the machine's own PostgreSQL running"
tests/scripts/install_deps_leaves_services_alone.sh
step "end to end: scripts/local.sh (cargo lambda watch + invoke on the local stack)"
scripts/local.sh
step "scripts/docker-host-network.py (the Docker API proxy for sam local invoke)"
.venv/bin/python tests/scripts/test_docker_host_network.py -v
step "scripts/sam-local.sh fails loudly when Docker cannot be had"
tests/scripts/sam_local_fails_loudly.sh
step "end to end: scripts/sam-local.sh (sam build + sam local invoke in Docker on the local stack)"
# No image registry is reachable in CI: the Lambda base image is a stand-in built from Debian's
# packages. Without --stand-in-image, SAM pulls AWS's own.
scripts/sam-local.sh --stand-in-image
step "all passed"
