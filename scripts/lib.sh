# Shared by the scripts (sourced, not run): running a command as root, starting the local stack,
# what each sample event must do, and the checks of an outcome and of the rows.
#
# Expects: `set -euo pipefail`; for the local stack and the checks, also the repo root as the
# working directory and $work (a scratch directory the caller owns). Everything started here is
# stopped by `cleanup` (the caller's EXIT trap).

# Runs a command as root: directly when we are root, else through sudo without a prompt. sudo's
# env_reset would drop DEBIAN_FRONTEND, and apt could then ask a question nobody sees.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n env DEBIAN_FRONTEND=noninteractive "$@"; fi
}

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}

# start_stack: builds the workspace binaries, starts `local-stack up` (TLS PostgreSQL 15 with
# sql/schema.sql and the role of sql/app-role.sql, PgBouncer, moto) and loads its environment:
# $work/env (for cargo lambda and psql) and $work/sam-env.json (for sam local invoke --env-vars).
start_stack() {
  echo "==> building the function and the local stack"
  cargo build --locked --workspace --bins
  echo "==> starting PostgreSQL, PgBouncer and moto (log: $work/stack.log)"
  # local-stack stops everything when its stdin closes (if this script is killed outright), or,
  # through its janitor, when cleanup's SIGTERM ends it; the fifo is held open until then.
  rm -f "$work/hold" && mkfifo "$work/hold"
  target/debug/local-stack up --env-file "$work/env" --sam-env-file "$work/sam-env.json" \
    <"$work/hold" >"$work/stack.log" 2>&1 &
  local stack_pid="$!"
  pids+=("$stack_pid")
  exec 3>"$work/hold"
  for _ in $(seq 1 600); do
    grep -q '^ready' "$work/stack.log" 2>/dev/null && break
    kill -0 "$stack_pid" 2>/dev/null || { cat "$work/stack.log"; return 1; }
    sleep 0.1
  done
  grep -q '^ready' "$work/stack.log" || { echo "local stack did not start in 60 s"; cat "$work/stack.log"; return 1; }
  set -a
  # shellcheck disable=SC1091
  . "$work/env"
  set +a
}

# expected FILE: what the README says the sample event does: `ok`, or `error <errorType>`.
expected() {
  case "$1" in
    sign-up-missing-email.json) echo "error InvalidUserAttributes" ;;
    *) echo ok ;;
  esac
}

failed=0
# check FILE GOT OUT: compares an invocation's outcome GOT (`ok` or `error <errorType>`) and, for
# `ok`, its output file OUT (must be the event, unchanged) with what FILE must do.
check() {
  local file="$1" got="$2" out="$3" want
  want="$(expected "$file")"
  # A Cognito event must come back unchanged; a park-queue (SQS) event is answered with a partial
  # batch response that names no failed message.
  if [ "$got" = ok ] &&
    ! python3 -c '
import json, sys
event, out = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
sys.exit(out != ({"batchItemFailures": []} if "Records" in event else event))' \
      "events/$file" "$out"; then
    got="ok, but the answer is not the event unchanged (or, for SQS, no failures)"
  fi
  if [ "$got" = "$want" ] && [ "$got" = ok ]; then
    echo "--> $file: ok, answered as Cognito (or SQS) requires"
  elif [ "$got" = "$want" ]; then
    echo "--> $file: $got, as documented"
  else
    echo "--> $file: UNEXPECTED: got $got, wanted $want"
    failed=1
  fi
}

psql_admin() {
  psql -X -h "$PG_ADMIN_SOCKET_DIR" -p "$PG_PORT" -U postgres -d "$DB_NAME" "$@"
}

# check_rows: prints public.users and checks it holds exactly one row per distinct sign-up with an
# email among the samples, and per parked user in an SQS sample, however often they were invoked, mapped as the README says (handle =
# preferred_username else userName; display_name = name else handle).
check_rows() {
  echo "==> rows in public.users"
  psql_admin -c 'SELECT cognito_user_id, email, handle, display_name, created_at FROM public.users ORDER BY created_at'
  local want got
  want=$(python3 -c '
import glob, json
rows = set()
for f in glob.glob("events/*.json"):
    e = json.load(open(f))
    for r in e.get("Records", []):  # a parked user, replayed
        p = json.loads(r["body"])
        rows.add("|".join([p["sub"], p["email"], p["handle"], p["display_name"]]))
    if "Records" in e:
        continue
    a = {k: v for k, v in e["request"]["userAttributes"].items() if v.strip()}
    if e["triggerSource"] == "PostConfirmation_ConfirmSignUp" and "email" in a:
        handle = a.get("preferred_username", e.get("userName"))
        rows.add("|".join([a["sub"], a["email"], handle, a.get("name", handle)]))
print("\n".join(sorted(rows)))')
  got=$(psql_admin -At -c "SELECT cognito_user_id || '|' || email || '|' || handle || '|' || display_name FROM public.users" | sort)
  if [ "$got" != "$want" ]; then
    printf 'UNEXPECTED rows:\n%s\nwanted (one per sign-up event):\n%s\n' "$got" "$want"
    failed=1
  fi
}

# run_samples: the caller's `invoke FILE` for every file in events/, sign-up.json once more (a
# Cognito retry, which must not add a row), then the rows.
run_samples() {
  local event
  for event in events/*.json; do
    invoke "$(basename "$event")"
  done
  echo "--> sign-up.json again (a Cognito retry): must not add a row"
  invoke sign-up.json
  check_rows
}
