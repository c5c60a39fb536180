#!/usr/bin/env bash
# Install Debian packages with apt-get (as root, else through sudo), after
# refreshing the package lists, which a fresh machine has none of: the one
# way ferry's scripts install what they need (tests/install-deps.sh,
# scripts/pgo.sh). Fails, saying so, where there is no apt-get.
#
#   scripts/apt-install.sh PACKAGE...
set -euo pipefail

[ $# -gt 0 ] || exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "apt-install: no apt-get here; install $* by hand" >&2
    exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq "$@" >/dev/null
