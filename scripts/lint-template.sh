#!/usr/bin/env bash
# Lints the SAM template offline and checks its security properties; exits non-zero on any finding.
#   1. cfn-lint, with informational rules too (any error, warning or info fails);
#   2. sam validate --lint (SAM CLI's own cfn-lint run) and sam validate (the SAM transform);
#   3. tests/template/test_template.py: the security properties, plus mutated copies that must fail.
#
# Usage: scripts/lint-template.sh [TEMPLATE]   (default: template.yaml at the repo root; pass a
# mutated copy to see the checks fail). Needs the repo venv (scripts/install-deps.sh).
#
# Never talks to AWS: credentials and config files are replaced by throwaway values, so a developer's
# real profile is neither needed nor used.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$repo/.venv/bin"
template="$(realpath "${1:-$repo/template.yaml}")"

for tool in python cfn-lint sam; do
  [ -x "$bin/$tool" ] || { echo "error: $bin/$tool missing; run scripts/install-deps.sh" >&2; exit 2; }
done
[ -f "$template" ] || { echo "error: no template at $template" >&2; exit 2; }

export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export AWS_ACCESS_KEY_ID=offline-lint AWS_SECRET_ACCESS_KEY=offline-lint
unset AWS_SESSION_TOKEN AWS_PROFILE AWS_REGION
export AWS_DEFAULT_REGION=us-east-1 # plain `sam validate` needs a region; nothing is called
export SAM_CLI_TELEMETRY=0
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in the work tree

failed=0
run() {
  echo "==> $*"
  if ! "$@"; then
    echo "FAILED: $*" >&2
    failed=1
  fi
}

run "$bin/cfn-lint" --include-checks I -- "$template"
run "$bin/sam" validate --lint --template-file "$template"
run "$bin/sam" validate --template-file "$template"
run env TEMPLATE_UNDER_TEST="$template" "$bin/python" "$repo/tests/template/test_template.py" -v

if [ "$failed" -ne 0 ]; then
  echo "lint-template: FAILED ($template)" >&2
  exit 1
fi
echo "lint-template: OK ($template)"
