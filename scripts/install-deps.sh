#!/usr/bin/env bash
# Installs what the tests and local runs need on a Debian 12 machine, as root, without prompts:
#   - PostgreSQL 15 server + client and PgBouncer (apt); when this script installs them, their system
#     services are stopped and kept from starting at boot (local-stack starts its own throwaway
#     instances on free ports); ones installed before are the machine owner's and left alone;
#   - a Python venv at <repo>/.venv with requirements-dev.txt (moto server, cargo-lambda, SAM CLI,
#     cfn-lint), rebuilt only when the requirements change (hash stamp in the venv);
#   - the rustup components clippy and rustfmt;
#   - with --with-docker (scripts/sam-local.sh): Debian's docker.io, unless a Docker engine is
#     already installed, and debootstrap (for the stand-in Lambda base image).
# Idempotent: a second run changes nothing and takes a few seconds.
set -euo pipefail

with_docker=0
for arg in "$@"; do
  case "$arg" in
    --with-docker) with_docker=1 ;;
    *) echo "usage: scripts/install-deps.sh [--with-docker]" >&2; exit 2 ;;
  esac
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
requirements="$repo/requirements-dev.txt"
stamp="$venv/.requirements.sha256"

export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { printf '==> %s\n' "$*"; }

# shellcheck source=scripts/lib.sh
. "$repo/scripts/lib.sh" # as_root

pkg_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

# --- apt packages -------------------------------------------------------------------------------
apt_wanted=(postgresql pgbouncer)
if [ "$with_docker" = 1 ]; then
  apt_wanted+=(debootstrap)
  # A Docker engine already installed (Docker CE, Docker Desktop, Debian's) is used as it is.
  if ! command -v dockerd >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
    apt_wanted+=(docker.io)
  fi
fi
# A system python3 without ensurepip cannot make a venv (Debian splits it into python3-venv).
if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  apt_wanted+=(python3-venv)
fi

missing=()
for pkg in "${apt_wanted[@]}"; do
  pkg_installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
  say "apt: installing ${missing[*]}"
  # Keep package scripts from starting services while we install (exit 101 = "action forbidden").
  # Only when no policy is in place already, and removed again however this script ends.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The system services of what was just installed: stopped, in case a package script started one
  # anyway, and kept from starting at boot where sysv-rc is in use (through sudo's PATH, which has
  # /usr/sbin). Failures are fine: nothing may be running, there may be no init system at all.
  for svc in pgbouncer postgresql; do
    case " ${missing[*]} " in *" $svc "*) ;; *) continue ;; esac
    as_root service "$svc" stop >/dev/null 2>&1 || true
    as_root update-rc.d "$svc" disable >/dev/null 2>&1 || true
  done
else
  say "apt: ${apt_wanted[*]} already installed"
fi

pg_bin=/usr/lib/postgresql/15/bin
for tool in "$pg_bin/initdb" "$pg_bin/pg_ctl" "$pg_bin/postgres"; do
  [ -x "$tool" ] || { echo "error: $tool missing after install" >&2; exit 1; }
done
for tool in psql pg_isready; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool not found after install" >&2; exit 1; }
done
pgbouncer_bin="$(command -v pgbouncer || echo /usr/sbin/pgbouncer)"
[ -x "$pgbouncer_bin" ] || { echo "error: pgbouncer not found after install" >&2; exit 1; }
say "$("$pg_bin/postgres" --version); $("$pgbouncer_bin" --version | head -n1)"

# --- Python venv --------------------------------------------------------------------------------
want_hash="$(sha256sum "$requirements" | cut -d' ' -f1)"
have_hash="$(cat "$stamp" 2>/dev/null || true)"
if [ -x "$venv/bin/python" ] && [ "$want_hash" = "$have_hash" ]; then
  say "venv: $venv up to date"
else
  if [ -x "$venv/bin/python" ]; then
    say "venv: requirements changed, updating $venv"
  else
    say "venv: creating $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  # Remove the stamp first so an interrupted install is redone next time.
  rm -f "$stamp"
  "$venv/bin/python" -m pip install -q --upgrade pip
  say "venv: pip install -r requirements-dev.txt (a few minutes on a fresh machine)"
  "$venv/bin/python" -m pip install -q -r "$requirements"
  "$venv/bin/python" -m pip check
  printf '%s\n' "$want_hash" > "$stamp"
fi
[ -x "$venv/bin/moto_server" ] || { echo "error: $venv/bin/moto_server missing" >&2; exit 1; }

# --- Rust -----------------------------------------------------------------------------------------
# A C compiler for aws-lc-sys (the crypto under rustls), and Rust itself: rust-toolchain.toml names
# the release (the locked AWS SDK crates need 1.94.1 or newer; Debian's packaged rustc is far older). Without
# rustup and without a new enough cargo, rustup is installed and takes the toolchain from that file.
if ! command -v cc >/dev/null 2>&1; then
  say "apt: installing a C compiler (gcc)"
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null
fi
export PATH="$HOME/.cargo/bin:$PATH"
cargo_too_old() {
  local version
  version="$(cargo --version 2>/dev/null | sed -n 's/^cargo \([0-9][0-9.]*\).*/\1/p')"
  [ -z "$version" ] || [ "$(printf '%s\n' 1.94.1 "$version" | sort -V | head -n1)" != 1.94.1 ]
}
if ! command -v rustup >/dev/null 2>&1 && cargo_too_old; then
  say "rustup: installing (cargo is missing or older than 1.94.1)"
  command -v curl >/dev/null 2>&1 || { as_root apt-get update -qq; as_root apt-get install -y -qq curl ca-certificates >/dev/null; }
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain none
fi
if command -v rustup >/dev/null 2>&1; then
  # Installs the release rust-toolchain.toml names, with its components, if it is missing. The
  # `show` comes first: it installs that release itself before rustup 1.28, which is also when
  # `toolchain install` learnt to work without an argument.
  (cd "$repo" && { rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install >/dev/null; })
fi
if command -v rustup >/dev/null 2>&1; then
  installed="$(rustup component list --installed 2>/dev/null || true)"
  for comp in clippy rustfmt; do
    if grep -q "^$comp" <<<"$installed"; then
      say "rustup: $comp present"
    else
      say "rustup: adding $comp"
      rustup component add "$comp"
    fi
  done
else
  for sub in clippy fmt; do
    cargo "$sub" --version >/dev/null 2>&1 ||
      { echo "error: no rustup and 'cargo $sub' is missing" >&2; exit 1; }
  done
  say "rustup: not found; cargo clippy and cargo fmt are present"
fi

say "install-deps: done"
