#!/usr/bin/env bash
# Runs the function end to end on a local default stack:
#   TLS-only PostgreSQL 15 (SCRAM) <- PgBouncer (transaction pooling, TLS both sides, the RDS Proxy
#   stand-in) <- the function under `cargo lambda watch`, as the least-privilege role of
#   sql/app-role.sql, with its credentials in moto's Secrets Manager; every file in events/ invoked
#   with `cargo lambda invoke` (sign-up.json twice, to show a retry writes nothing); then the rows
#   are printed and checked. Everything it starts is stopped again, however it ends.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-deps.sh
export PATH="$PWD/.venv/bin:$HOME/.cargo/bin:$PATH"
# Its own directory: a `local-stack up` of the README's manual steps keeps .stack/env.
work="$PWD/.stack/local"
rm -rf "$work" && mkdir -p "$work"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
trap cleanup EXIT

start_stack

# A free port for cargo lambda watch's Runtime API (its default, 9000, may be taken); LAMBDA_PORT overrides.
port="${LAMBDA_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
echo "==> cargo lambda watch on 127.0.0.1:$port (log: .stack/local/watch.log)"
AWS_LAMBDA_LOG_FORMAT=json RUST_LOG=${RUST_LOG:-info} cargo lambda watch -A 127.0.0.1 -P "$port" >"$work/watch.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 300); do
  (exec 4<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.2
done

# invoke FILE: one sample event through cargo lambda invoke, checked against what it must do.
invoke() {
  local file="$1" got=ok
  if ! cargo lambda invoke cognito-post-confirmation -A 127.0.0.1 -P "$port" \
    --data-file "events/$file" >"$work/out.json" 2>"$work/err.txt"; then
    got="error $(python3 -c 'import re, sys; m = re.search(r"\b(Invalid\w+|\w+Error|Timeout)\b", sys.stdin.read()); print(m.group(1) if m else "(unknown)")' <"$work/err.txt")"
  fi
  check "$file" "$got" "$work/out.json"
}

run_samples

# An event serde_json refuses: a lone surrogate in a client metadata value (an app that cut an
# emoji in two). The runtime hands it over unparsed; the function records the user and answers
# with the event byte for byte (it used to fail in the runtime, with an error quoting the field).
python3 - "$work/surrogate.json" <<'PY'
import json, sys
event = json.load(open("events/sign-up.json"))
event["request"]["userAttributes"]["sub"] = "00000000-0000-4000-8000-00000000d800"
event["request"]["clientMetadata"] = {"promo-code": "MARK"}
open(sys.argv[1], "w").write(json.dumps(event).replace("MARK", "x\\ud800y"))
PY
if cargo lambda invoke cognito-post-confirmation -A 127.0.0.1 -P "$port" \
  --data-file "$work/surrogate.json" >"$work/out.json" 2>"$work/err.txt" &&
  python3 -c 'import sys; sys.exit(open(sys.argv[1]).read().strip() != open(sys.argv[2]).read().strip())' \
    "$work/surrogate.json" "$work/out.json" &&
  [ "$(psql_admin -Atc "SELECT count(*) FROM public.users WHERE cognito_user_id = '00000000-0000-4000-8000-00000000d800'")" = 1 ]; then
  echo "--> a lone surrogate in client metadata: recorded, the event answered byte for byte"
else
  echo "--> a lone surrogate in client metadata: UNEXPECTED:"
  cat "$work/err.txt" "$work/out.json"
  failed=1
fi
echo "==> function logs (JSON, no personal data): .stack/local/watch.log"
exit "$failed"
