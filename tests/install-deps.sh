#!/usr/bin/env bash
# Install what the test suite needs when it is missing, so that `make test`
# works on a fresh machine; quick (a few checks, no network) when all is there.
#
# - OpenSSH's sshd and client tools (ssh-keygen, sftp) for the SFTP tests
#   and the benchmark, rclone for the benchmark, openssl for certificates
#   and the test CA;
# - chromium renders report.html headless; script(1) (bsdutils) gives ferry
#   a terminal to prove the progress bar shows only there;
# - one Python venv (target/test-venv or $FERRY_TEST_VENV) with pyftpdlib 2
#   and pyOpenSSL (the FTP/FTPS server; Debian's python3-pyftpdlib 1.5 has
#   broken FTPS passive replies) and aiosmtpd (the SMTP server);
# - two local accounts the test sshd logs in: ferrytest-pw (password
#   "ferry-test-pw") and ferrytest-key (key only, no password), both with
#   no login shell. Needs root; the tests are run as root here.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo is missing; install Rust (https://rustup.rs) first" >&2
    exit 1
fi

missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 && command -v sftp >/dev/null 2>&1 || missing+=(openssh-client)
command -v rclone >/dev/null 2>&1 || missing+=(rclone)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v script >/dev/null 2>&1 || missing+=(bsdutils)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -x /usr/bin/python3 ] || missing+=(python3)
/usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}" >&2
    "$root/scripts/apt-install.sh" "${missing[@]}"
fi

venv="${FERRY_TEST_VENV:-$root/target/test-venv}"
venv_ok='import aiosmtpd, pyftpdlib, OpenSSL; assert int(pyftpdlib.__ver__.split(".")[0]) >= 2'
if ! "$venv/bin/python" -c "$venv_ok" >/dev/null 2>&1; then
    echo "install-deps: making $venv with pyftpdlib, pyOpenSSL and aiosmtpd" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'pyftpdlib>=2,<3' 'pyopenssl' 'aiosmtpd>=1.4,<2'
fi

if [ "$(id -u)" -eq 0 ]; then
    nologin="$(command -v nologin || echo /usr/sbin/nologin)"
    for user in ferrytest-pw ferrytest-key; do
        if ! id "$user" >/dev/null 2>&1; then
            echo "install-deps: adding test account $user" >&2
            useradd --no-create-home --home-dir / --shell "$nologin" "$user"
        fi
    done
    # useradd leaves accounts locked ("!"), which blocks even key logins
    # when sshd runs without PAM: "*" is unlocked but has no password.
    if [ "$(getent shadow ferrytest-key | cut -d: -f2)" != "*" ]; then
        usermod -p '*' ferrytest-key
    fi
    echo 'ferrytest-pw:ferry-test-pw' | chpasswd
else
    echo "install-deps: not root: the SFTP tests need the accounts ferrytest-pw and ferrytest-key (see this script)" >&2
fi
