#!/usr/bin/env bash
# Install what the test suite needs when it is missing, so that `make test`
# works on a fresh machine. Fast (no network) when everything is there.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo is missing; install Rust (https://rustup.rs) first" >&2
    exit 1
fi

# Debian packages, installed with apt-get only when one is missing.
APT_UPDATED=0
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-deps: $* missing and no apt-get here; install it by hand" >&2
        exit 1
    fi
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if [ "$APT_UPDATED" -eq 0 ]; then
        $sudo apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# --- email and report tests (cron branch) ---------------------------------
# openssl makes the test CA; aiosmtpd (PyPI, in a venv from Debian's python3)
# is the SMTP server; chromium renders report.html headless; script(1) gives
# ferry a terminal to prove the progress bar shows only there.
command -v openssl >/dev/null 2>&1 || apt_install openssl
command -v script >/dev/null 2>&1 || apt_install bsdutils
command -v chromium >/dev/null 2>&1 || apt_install chromium
if [ ! -x /usr/bin/python3 ] || ! /usr/bin/python3 -c "import venv, ensurepip" >/dev/null 2>&1; then
    apt_install python3 python3-venv
fi
VENV="$ROOT/target/test-venv"
if ! "$VENV/bin/python" -c "import aiosmtpd" >/dev/null 2>&1; then
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check 'aiosmtpd>=1.4,<2'
fi
