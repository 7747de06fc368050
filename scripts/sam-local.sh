#!/usr/bin/env bash
# Runs every sample event through the real SAM CLI, as README "Invoking with SAM locally" shows:
# `sam build --config-env local` (x86_64; local-arm64 on an arm64 machine), then one
# `sam local invoke --config-env local PostConfirmationFunction -e events/<file>` per event (and
# sign-up.json twice, a Cognito retry) in Docker against the local stack, checking each outcome,
# the returned event, that an error names no host, port or secret, and the rows.
#
# Usage: scripts/sam-local.sh [--stand-in-image]
#   --stand-in-image  run the function in a stand-in for AWS's Lambda base image, built here from
#                     Debian's packages, for machines that reach no image registry (CI). Without
#                     it, SAM pulls AWS's own image as usual.
# Docker: an engine that answers is used as it is; otherwise, as root, Debian's dockerd is started
# for this run and stopped again. Fails, never skips, when there is no engine to be had.
# The build uses the dev profile (SAM_BUILD_MODE=debug, as `cargo lambda watch` does), which builds
# in about half the time of the release profile; the code is the same.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

stand_in=0
for arg in "$@"; do
  case "$arg" in
    --stand-in-image) stand_in=1 ;;
    *) echo "usage: scripts/sam-local.sh [--stand-in-image]" >&2; exit 2 ;;
  esac
done

scripts/install-deps.sh --with-docker
export PATH="$PWD/.venv/bin:$HOME/.cargo/bin:$PATH"
export SAM_CLI_TELEMETRY=0
# moto accepts any credentials; fixed ones keep a developer's real profile out of the container.
export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN
# Its own directory: a `local-stack up` of the README's manual steps keeps .stack/env.
work="$PWD/.stack/sam-local"
rm -rf "$work" && mkdir -p "$work"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
trap cleanup EXIT

# --- Docker -------------------------------------------------------------------------------------
# SAM puts its container on Docker's bridge whatever --docker-network says; a shim in front of the
# engine gives it the host's network instead, so the function reaches the stack on 127.0.0.1 (see
# scripts/docker-host-network.py). That takes a local engine.
case "${DOCKER_HOST:-}" in
  "") # The current Docker context's engine, else the default. (The proxy refuses a rootless one.)
    docker_socket="$(docker context inspect --format '{{.Endpoints.docker.Host}}' 2>/dev/null || true)"
    docker_socket="${docker_socket#unix://}"
    case "$docker_socket" in /*) ;; *) docker_socket=/var/run/docker.sock ;; esac ;;
  unix://*) docker_socket="${DOCKER_HOST#unix://}" ;;
  *) echo "error: DOCKER_HOST=$DOCKER_HOST: only a local engine (a unix socket) can give SAM's container the host's network" >&2; exit 1 ;;
esac
if docker info >/dev/null 2>&1; then
  echo "==> Docker: using the running engine"
elif [ -z "${DOCKER_HOST:-}" ] && [ "$(id -u)" -eq 0 ] && command -v dockerd >/dev/null 2>&1; then
  # overlay2 starts a container in well under a second; vfs, which works on any file system
  # (inside containers and sandboxes too), copies the whole image for each one.
  for driver in overlay2 vfs; do
    echo "==> Docker: starting dockerd ($driver) for this run (log: .stack/sam-local/dockerd.log)"
    dockerd --storage-driver="$driver" >"$work/dockerd.log" 2>&1 &
    dockerd_pid="$!"
    for _ in $(seq 1 120); do
      docker info >/dev/null 2>&1 && break
      kill -0 "$dockerd_pid" 2>/dev/null || break
      sleep 0.5
    done
    docker info >/dev/null 2>&1 && break
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
  done
  if ! docker info >/dev/null 2>&1; then
    echo "error: dockerd did not start (with overlay2 or vfs); sam local invoke needs Docker:" >&2
    tail -n 20 "$work/dockerd.log" >&2
    exit 1
  fi
  pids+=("$dockerd_pid")
else
  echo "error: no Docker engine answers ('docker info' fails) and this script cannot start one" \
    "(it starts Debian's dockerd only as root, with DOCKER_HOST unset); sam local invoke needs Docker" >&2
  exit 1
fi
scripts/docker-host-network.py "$work/docker.sock" "$docker_socket" >"$work/docker-host-network.log" 2>&1 &
proxy_pid="$!"
pids+=("$proxy_pid")
# It asks the engine first (up to 10 s) and exits if it cannot serve it.
for _ in $(seq 1 150); do
  [ -S "$work/docker.sock" ] && break
  kill -0 "$proxy_pid" 2>/dev/null || break
  sleep 0.1
done
[ -S "$work/docker.sock" ] || { echo "error: the Docker host-network proxy did not start:" >&2; cat "$work/docker-host-network.log" >&2; exit 1; }
export DOCKER_HOST="unix://$work/docker.sock"

image_args=()
if [ "$stand_in" = 1 ]; then
  # AWS's provided.al2023 image is a minimal Linux with a CA bundle; SAM adds its Runtime
  # Interface Emulator on top of whatever image it is given.
  image=cognito-post-confirmation-stand-in:bookworm
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    echo "==> building the stand-in base image $image (debootstrap and docker import: about 4 minutes on 2 cores)"
    # debootstrap runs only as root, and the tree it makes is root's: through sudo otherwise.
    root="$(mktemp -d)"
    trap 'as_root rm -rf "$root" || true; cleanup' EXIT
    as_root debootstrap --variant=minbase --include=ca-certificates bookworm "$root" >"$work/debootstrap.log" 2>&1 ||
      { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
    # What a function never reads: package caches and lists, documentation, translations.
    as_root rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/{doc,man,info,locale}
    as_root tar -C "$root" -c . | docker import - "$image" >/dev/null
    as_root rm -rf "$root"
    trap cleanup EXIT
  fi
  image_args=(--invoke-image "$image" --skip-pull-image)
fi

# --- build and invoke ---------------------------------------------------------------------------
case "$(uname -m)" in
  x86_64 | amd64) config_env=local ;;
  aarch64 | arm64) config_env=local-arm64 ;;
  *) echo "error: no SAM config environment for $(uname -m)" >&2; exit 1 ;;
esac
echo "==> sam build --config-env $config_env (log: .stack/sam-local/sam-build.log)"
SAM_BUILD_MODE=debug sam build --config-env "$config_env" >"$work/sam-build.log" 2>&1 ||
  { tail -n 30 "$work/sam-build.log" >&2; exit 1; }

start_stack

# invoke FILE [ENV_FILE WANT]: one sample event through sam local invoke with the stack's
# --env-vars file, checked against what it must do; or with ENV_FILE, checked against WANT.
invoke() {
  local file="$1" env_file="${2:-$work/sam-env.json}" want="${3:-}" got
  if ! sam local invoke --config-env "$config_env" PostConfirmationFunction \
    -e "events/$file" --env-vars "$env_file" "${image_args[@]}" >"$work/out.json" 2>"$work/invoke.log"; then
    echo "--> $file: sam local invoke failed:"
    tail -n 20 "$work/invoke.log"
    failed=1
    return
  fi
  # SAM exits 0 without an answer too (the container never came up, say): its log says why.
  if ! [ -s "$work/out.json" ]; then
    echo "--> $file: sam local invoke printed no answer:"
    tail -n 20 "$work/invoke.log"
    failed=1
    return
  fi
  # The function's answer: the event, or Lambda's error object. An error's message is what Cognito
  # shows strangers: a fixed sentence, the type and the request id, and nothing of the stack.
  got="$(python3 - "$work/out.json" "$DB_PORT" "$PG_PORT" "$AWS_ENDPOINT_URL_SECRETS_MANAGER" "$DB_SECRET_ID" <<'PY'
import json, re, sys
out = json.load(open(sys.argv[1]))
if isinstance(out, dict) and "errorType" in out:
    message = out.get("errorMessage", "")
    private = ["localhost", "127.0.0.1", sys.argv[2], sys.argv[3], sys.argv[4].rsplit(":", 1)[-1], "`" + sys.argv[5] + "`"]
    shape = re.fullmatch(r"[A-Z][^()`]*\. \(" + re.escape(out["errorType"]) + r", request [0-9a-f-]+\)", message)
    leaks = [s for s in private if s in message]
    bad = "" if shape and not leaks else f" with a message that is not the fixed public one ({leaks}): {message}"
    print(f"error {out['errorType']}{bad}")
else:
    print("ok")
PY
)"
  if [ "$env_file" = "$work/sam-env.json" ]; then
    check "$file" "$got" "$work/out.json"
  elif [ "$got" = "$want" ]; then
    echo "--> $file with $(basename "$env_file"): $got, as it must"
  else
    echo "--> $file with $(basename "$env_file"): UNEXPECTED: got $got, wanted $want"
    failed=1
  fi
}

# A database nobody listens on: the error Cognito would show must name nothing of the stack.
python3 - "$work/sam-env.json" "$work/sam-env-no-database.json" <<'PY'
import json, socket, sys
env = json.load(open(sys.argv[1]))
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    closed = s.getsockname()[1]
env["PostConfirmationFunction"]["DB_PORT"] = str(closed)
json.dump(env, open(sys.argv[2], "w"))
PY
invoke sign-up.json "$work/sam-env-no-database.json" "error DatabaseConnectionError"

run_samples
exit "$failed"
