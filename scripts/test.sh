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
