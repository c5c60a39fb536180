#!/usr/bin/env bash
# Install what the test suite needs when it is missing, so that `make test`
# works on a fresh machine. Today that is only the Rust toolchain, which must
# already be there; servers for transport tests are added here as they come.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo is missing; install Rust (https://rustup.rs) first" >&2
    exit 1
fi
