#!/usr/bin/env bash
# Profile-guided release builds (rustc's -Cprofile-generate/-Cprofile-use).
# On the HL7 benchmark this cut parse-and-map instructions by 17% and time
# by about as much: the compiler lays out and inlines the parsing and mapping
# code by how a real run takes its branches.
#
#   scripts/pgo.sh build   ferry at target/pgo/use/release/ferry (`make release`)
#   scripts/pgo.sh bench   the HL7 benchmark, built the same way (`make bench`)
#
# Steps: an instrumented build (target/pgo/gen), a training run of it, the
# profiles merged by llvm-profdata (target/pgo/ferry.profdata), then the
# build that uses them (target/pgo/use). Training runs the demo job on
# sample-data/ (flat files, HL7 ADT and SIU with planted bad messages,
# reconciliation, reports) and reads HL7 batches on one and two threads: a
# generated one of 50,000 ADT messages (other messages than the benchmark
# measures, of the same shape) and the demo's HL7 files.
#
# llvm-profdata must come from the LLVM that rustc is built on (`rustc -vV`);
# it is installed from Debian's llvm-N package when missing. Without it the
# build goes on without profiles and says so (`build`: target/release/ferry).
set -euo pipefail

cd "$(dirname "$0")/.."
root="$PWD"
dir="$root/target/pgo"
what="${1:-}"
case "$what" in
    build | bench) ;;
    *)
        echo "usage: scripts/pgo.sh build|bench" >&2
        exit 2
        ;;
esac

# The llvm-profdata of rustc's own LLVM, installed when missing.
profdata() {
    local major
    major="$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
    for candidate in "/usr/lib/llvm-$major/bin/llvm-profdata" "$(command -v "llvm-profdata-$major" || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then
            echo "$candidate"
            return
        fi
    done
    echo "pgo: installing llvm-$major for llvm-profdata (rustc uses LLVM $major)" >&2
    if "$root/scripts/apt-install.sh" "llvm-$major" >&2 && [ -x "/usr/lib/llvm-$major/bin/llvm-profdata" ]; then
        echo "/usr/lib/llvm-$major/bin/llvm-profdata"
        return
    fi
    echo "pgo: no llvm-profdata for LLVM $major (Debian package llvm-$major); building without profiles" >&2
}

# Builds the HL7 bench (and what else the arguments name) with the release
# profile, which the bench's own profile inherits but would build every
# dependency a second time for, and prints the bench's path.
build_bench() {
    cargo build --release --locked --bench hl7 "$@" --message-format=json-render-diagnostics |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "hl7":
        print(m["executable"])'
}

tool="$(profdata)"
if [ -z "$tool" ]; then
    case "$what" in
        build)
            cargo build --release --locked --bin ferry
            echo "pgo: built $root/target/release/ferry, without profiles"
            ;;
        bench) cargo bench --locked --bench hl7 ;;
    esac
    exit
fi

# 1. Instrumented: ferry and the bench, each run writes a .profraw file.
rm -rf "$dir/profiles"
mkdir -p "$dir/profiles"
export CARGO_TARGET_DIR="$dir/gen"
export RUSTFLAGS="-Cprofile-generate=$dir/profiles"
trainer="$(build_bench --bin ferry)"

# 2. Training.
home="$(mktemp -d)"
trap 'rm -rf "$home"' EXIT
FERRY_HOME="$home" "$dir/gen/release/ferry" -q run jobs/demo.toml >/dev/null
FERRY_BENCH_TRAIN=1 "$trainer" --bench

# 3. Merged.
"$tool" merge -o "$dir/ferry.profdata" "$dir/profiles"

# 4. Built with the profiles. FERRY_PGO tells the bench how it was built.
export CARGO_TARGET_DIR="$dir/use"
export RUSTFLAGS="-Cprofile-use=$dir/ferry.profdata"
export FERRY_PGO="trained by scripts/pgo.sh"
case "$what" in
    build)
        cargo build --release --locked --bin ferry
        echo "pgo: built $dir/use/release/ferry"
        ;;
    bench) "$(build_bench)" --bench ;;
esac
