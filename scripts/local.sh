#!/usr/bin/env bash
# Runs the function end to end on a local default stack:
#   TLS-only PostgreSQL 15 (SCRAM) <- PgBouncer (transaction pooling, TLS both sides, the RDS Proxy
#   stand-in) <- the function under `cargo lambda watch`, with its credentials in moto's Secrets
#   Manager; sql/schema.sql and sql/app-role.sql applied; every file in events/ invoked with `cargo lambda invoke`
#   (sign-up.json twice, to show a retry writes nothing); then the rows are printed.
# Everything it starts is stopped again, however it ends.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"

scripts/install-deps.sh
export PATH="$repo/.venv/bin:$PATH"

work="$repo/.stack"
rm -rf "$work" && mkdir -p "$work"
# A free port for cargo lambda watch's Runtime API (its default, 9000, may be taken); LAMBDA_PORT overrides.
port="${LAMBDA_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

echo "==> building the function and the local stack"
cargo build --locked --workspace --bins

echo "==> starting PostgreSQL, PgBouncer and moto"
# local-stack stops everything when its stdin closes; the fifo is held open until cleanup.
mkfifo "$work/hold"
target/debug/local-stack up --schema sql/schema.sql --env-file "$work/env" \
  <"$work/hold" >"$work/stack.log" 2>&1 &
pids+=("$!")
exec 3>"$work/hold"
for _ in $(seq 1 600); do
  grep -q '^ready' "$work/stack.log" 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/stack.log"; exit 1; }
  sleep 0.1
done
grep -q '^ready' "$work/stack.log" || { echo "local stack did not start in 60 s"; cat "$work/stack.log"; exit 1; }
set -a
# shellcheck disable=SC1091
. "$work/env"
set +a
# The function logs in as a role with exactly the rights sql/app-role.sql grants (as in production).
psql -X -q -h "$PG_ADMIN_SOCKET_DIR" -p "$PG_PORT" -U postgres -d "$DB_NAME" \
  -v app_role=app -f sql/app-role.sql

echo "==> cargo lambda watch on 127.0.0.1:$port (log: .stack/watch.log)"
AWS_LAMBDA_LOG_FORMAT=json RUST_LOG=${RUST_LOG:-info} cargo lambda watch -A 127.0.0.1 -P "$port" >"$work/watch.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 300); do
  (exec 4<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.2
done

failed=0
# invoke FILE ok|error: invokes one sample event and checks the outcome the README documents.
invoke() {
  local file="$1" want="$2" got=ok
  cargo lambda invoke cognito-post-confirmation -A 127.0.0.1 -P "$port" \
    --data-file "events/$file" >"$work/out.json" 2>"$work/err.txt" || got=error
  if [ "$got" = ok ]; then
    if python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])) != json.load(open(sys.argv[2])))' \
        "events/$file" "$work/out.json"; then
      echo "--> $file: ok, returned the event unchanged"
    else
      echo "--> $file: ok, but the returned event differs from the input"
      got=changed
    fi
  else
    echo "--> $file: error: $(tr '\n' ' ' <"$work/err.txt")"
  fi
  if [ "$got" != "$want" ]; then
    echo "    UNEXPECTED: wanted $want"
    failed=1
  fi
}

for event in events/*.json; do
  name="$(basename "$event")"
  case "$name" in
    *missing-email*) invoke "$name" error ;;
    *) invoke "$name" ok ;;
  esac
done
echo "--> sign-up.json again (a Cognito retry): must not add a row"
invoke sign-up.json ok

echo "==> rows in public.users"
psql -X -h "$PG_ADMIN_SOCKET_DIR" -p "$PG_PORT" -U postgres -d "$DB_NAME" \
  -c 'SELECT cognito_user_id, email, handle, display_name, created_at FROM public.users ORDER BY created_at'
# Exactly one row per distinct sign-up with an email among the samples, however often invoked.
expected=$(python3 -c '
import glob, json
subs = set()
for f in glob.glob("events/*.json"):
    e = json.load(open(f))
    a = e["request"]["userAttributes"]
    if e["triggerSource"] == "PostConfirmation_ConfirmSignUp" and a.get("email"):
        subs.add(a["sub"])
print(len(subs))')
rows=$(psql -X -At -h "$PG_ADMIN_SOCKET_DIR" -p "$PG_PORT" -U postgres -d "$DB_NAME" \
  -c 'SELECT count(*) FROM public.users')
if [ "$rows" != "$expected" ]; then
  echo "UNEXPECTED: $rows rows, wanted $expected (one per sign-up event)"
  failed=1
fi
echo "==> function logs (JSON, no personal data): .stack/watch.log"
exit "$failed"
