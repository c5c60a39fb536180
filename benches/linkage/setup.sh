#!/usr/bin/env bash
# Create the Python venv that benches/linkage/compare.py runs in.
#
#   bash benches/linkage/setup.sh [VENV]
#
# VENV defaults to target/bench/linkage-venv under the repository root (a VENV
# given on the command line is taken relative to the current directory). The
# interpreter is $PYTHON, default python3; it must be Python 3.11 or newer
# (numpy 2.4 needs 3.11).
#
# Every package is pinned, the transitive ones too: this set was installed and
# run together (recordlinkage and splink on a 10,000 x 10,000 fixture) with
# CPython 3.11.7 on x86_64 Linux. Wheels only: nothing is compiled.
#
# Idempotent: when the venv already imports every package at its pinned
# version, the script says so and changes nothing. Exits non-zero with a
# message on stderr when something cannot be installed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${1:-$repo/target/bench/linkage-venv}"
python="${PYTHON:-python3}"

die() { echo "linkage setup: $*" >&2; exit 1; }

# The pins. The first three are what the benchmark compares; the rest are
# their dependencies as pip resolved them.
requirements='
recordlinkage==0.16
splink==4.0.17
pandas==2.3.3
duckdb==2.0.0
numpy==2.4.6
scipy==1.17.1
scikit-learn==1.9.1
jellyfish==1.3.0
joblib==1.6.0
threadpoolctl==3.8.0
cloudpickle==3.1.2
sqlglot==30.30.0
altair==6.3.0
narwhals==2.29.0
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
referencing==0.37.0
rpds-py==2026.9.1
attrs==26.1.0
igraph==1.0.0
texttable==1.7.2
Jinja2==3.1.6
MarkupSafe==3.0.4
packaging==26.3
python-dateutil==4.0.0
pytz==2026.6
tzdata==2026.6
typing_extensions==4.16.0
'

# Exit 0 when the venv imports the three packages (and duckdb, jellyfish) and
# every pin is installed at its version; print what is off otherwise.
check() {
    "$venv/bin/python" - "$requirements" <<'EOF'
import importlib, importlib.metadata as md, sys
bad = []
for line in sys.argv[1].split():
    name, want = line.split("==")
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = None
    if have != want:
        bad.append(f"{name} {have or 'missing'} (want {want})")
for module in ("recordlinkage", "splink", "pandas", "duckdb", "jellyfish"):
    try:
        importlib.import_module(module)
    except Exception as e:   # noqa: BLE001 - any failure means "not set up"
        bad.append(f"import {module}: {e}")
if bad:
    print("  " + "\n  ".join(bad), file=sys.stderr)
    sys.exit(1)
EOF
}

if [ -x "$venv/bin/python" ] && check 2>/dev/null; then
    echo "linkage setup: $venv is ready (recordlinkage 0.16, splink 4.0.17, pandas 2.3.3)"
    exit 0
fi

command -v "$python" >/dev/null || die "$python not found (set PYTHON to a Python 3.11+ interpreter)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$python is $("$python" -c 'import sys; print(sys.version.split()[0])'); Python 3.11 or newer is needed"

if [ ! -x "$venv/bin/python" ]; then
    echo "linkage setup: creating $venv"
    mkdir -p "$(dirname "$venv")" || die "could not create $(dirname "$venv")"
    "$python" -m venv "$venv" ||
        die "could not create a venv at $venv (on Debian: apt-get install python3-venv)"
fi

echo "linkage setup: installing the pinned packages into $venv"
req_file="$(mktemp)"
trap 'rm -f "$req_file"' EXIT
printf '%s\n' $requirements >"$req_file"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install --quiet --no-input \
    --only-binary=:all: -r "$req_file" ||
    die "pip could not install the pinned packages into $venv (see pip's message above)"

check || die "$venv still does not import the pinned packages (listed above)"
echo "linkage setup: $venv is ready (recordlinkage 0.16, splink 4.0.17, pandas 2.3.3)"
