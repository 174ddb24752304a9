#!/usr/bin/env bash
# Runs every check and test of faasight on a fresh machine: installs what
# the tests need (psql and chattr from Debian; a Python venv with the OpenTelemetry
# SDK, DuckDB, pyarrow, moto, psycopg, PyYAML and hadolint; the JS SDK from
# npm), then fmt, clippy, the release build of the Dockerfile and all Rust
# tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds are shared between runs and clones; DataFusion takes minutes.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/faasight-target}"

echo "== psql, openssl and chattr (Debian packages)"
missing=""
command -v psql >/dev/null 2>&1 || missing="$missing postgresql-client"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
# chattr: a durability test makes a WAL segment undeletable (chattr +i).
command -v chattr >/dev/null 2>&1 || missing="$missing e2fsprogs"
if [ -n "$missing" ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

echo "== python clients (.venv)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# A download can arrive damaged from the registry (a wheel whose sha256 is
# not the one PyPI lists has failed a run); pip refuses it, so try again
# without pip's cache before giving up. constraints.txt pins every
# transitive package, so a release on PyPI does not change what is tested.
pip_install() {
  .venv/bin/python -m pip install --quiet --disable-pip-version-check \
    -r tests/e2e/requirements.txt -c tests/e2e/constraints.txt "$@"
}
pip_install || {
  echo "pip install failed; retrying without pip's cache in 5 s" >&2
  sleep 5
  pip_install --no-cache-dir
} || {
  echo "pip install failed again; last try in 5 s" >&2
  sleep 5
  pip_install --no-cache-dir
} || {
  echo "pip install failed three times" >&2
  exit 1
}

echo "== js clients (tests/e2e/js)"
(cd tests/e2e/js && npm ci --no-audit --no-fund --loglevel=error)

echo "== cargo fmt"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== release build (the Dockerfile's build stage runs this same command)"
cargo build --release --locked --bin faasight

echo "== cargo test"
cargo test --workspace --locked
