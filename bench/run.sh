#!/usr/bin/env bash
# The speed budget (not part of the tests): builds the release bootstrap for this machine and the
# arm64 one that is deployed, then runs bench/ against a fresh local stack. Prints a table and
# writes target/bench/results.json. Extra arguments go to the bench (e.g. --warm 2000).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-deps.sh >/dev/null
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p target/bench
echo "==> release builds (x86_64 for this machine; arm64 as deployed, via cargo lambda)"
cargo build --release --locked -p cognito-post-confirmation -p bench
cargo lambda build --release --arm64 --bin cognito-post-confirmation >/dev/null
echo "==> machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
target/release/bench \
  --bootstrap target/release/cognito-post-confirmation \
  --arm64-bootstrap target/lambda/cognito-post-confirmation/bootstrap "$@"
