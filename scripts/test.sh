#!/usr/bin/env bash
# The whole test suite, on a fresh machine of this kind or a used one:
# installs what the tests need when it is missing, starts MariaDB and
# PostgreSQL when they are down and waits until they answer, then runs fmt,
# clippy, rustdoc and every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Compiled dependencies are kept outside the clone so reruns (and CI's fresh
# clones) are quick; everything works when this directory is empty.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/slavealloc-target}"
export SLAVEALLOC_TEST_MYSQL="${SLAVEALLOC_TEST_MYSQL:-mysql://root@127.0.0.1:3306}"
# The tac tests also run the disabled tac under Python 2 when one is there.
py2=$(ls -d /root/.pyenv/versions/2.7*/bin/python 2>/dev/null | head -n1 || true)
if [ -n "$py2" ]; then export SLAVEALLOC_TEST_PYTHON2="${SLAVEALLOC_TEST_PYTHON2:-$py2}"; fi
export SLAVEALLOC_TEST_POSTGRES="${SLAVEALLOC_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432}"

say() { printf '\n== %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_missing_packages() {
    local missing=()
    command -v chromium >/dev/null || missing+=(chromium)
    command -v chromedriver >/dev/null || missing+=(chromium-driver)
    command -v mysqladmin >/dev/null || missing+=(mariadb-client)
    command -v pg_isready >/dev/null || missing+=(postgresql-client)
    python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
    # apps/e2e/tests/deploy.rs: nginx -t and a real nginx on the sites; the scripts linted.
    command -v nginx >/dev/null || missing+=(nginx-light)
    command -v shellcheck >/dev/null || missing+=(shellcheck)
    command -v curl >/dev/null || missing+=(curl)
    if [ "${#missing[@]}" -gt 0 ]; then
        say "installing ${missing[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

wait_for() { # what, command...
    local what=$1; shift
    for _ in $(seq 1 60); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    echo "$what did not answer within 60 s" >&2
    return 1
}

start_databases() {
    if ! mysqladmin -h 127.0.0.1 -u root ping >/dev/null 2>&1; then
        say "starting MariaDB"
        as_root mkdir -p /run/mysqld
        as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
        as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
    fi
    if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
        say "starting PostgreSQL"
        as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    fi
    wait_for MariaDB mysqladmin -h 127.0.0.1 -u root ping
    wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432
}

install_missing_packages
start_databases

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
say "rustdoc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
say "cargo test"
# cargo test builds both binaries for their own integration tests; the
# end-to-end tests use those rather than building them again with other
# features.
export SLAVEALLOC_E2E_BIN_DIR="${SLAVEALLOC_E2E_BIN_DIR:-$CARGO_TARGET_DIR/debug}"
cargo test --workspace --locked
