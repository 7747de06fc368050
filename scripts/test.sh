#!/usr/bin/env bash
# Runs every test: formatting, lints, unit tests, the integration tests against a real local stack
# (TLS PostgreSQL 15, PgBouncer, moto; each started and stopped by the tests themselves), and the
# SAM template checks. Installs what is missing first. This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-deps.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --workspace --locked
echo "==> SAM template"
scripts/lint-template.sh
echo "==> end to end: scripts/local.sh (cargo lambda watch + invoke on the local stack)"
scripts/local.sh
