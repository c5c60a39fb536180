# ferry: the two commands that matter are `make demo` and `make test`.

CARGO      ?= cargo
# The demo's state (SQLite store, received copies, reports) lives here.
DEMO_HOME  ?= $(CURDIR)/demo-home

.PHONY: all build release demo test bench clean

all: build

build:
	$(CARGO) build --release --locked

## The build to deploy: profile-guided (scripts/pgo.sh; about a fifth
## faster on HL7), at target/pgo/use/release/ferry. Takes two release builds.
release:
	./scripts/pgo.sh build

## Build, then run the demo job on sample-data/ (no servers needed).
demo: build
	FERRY_HOME=$(DEMO_HOME) ./target/release/ferry run jobs/demo.toml
	@echo "Planted cases and where they are: sample-data/README.md"

## Build and run every test (installs what the tests need when missing).
test:
	./tests/install-deps.sh
	$(CARGO) test --locked
	# Benches must keep compiling, but only `make bench` runs them.
	$(CARGO) check --locked --benches
	# Doc comments' links must resolve (private items too: they are read).
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked --no-deps --document-private-items

## Benchmarks (release build; prints side-by-side tables): HL7 throughput
## (built as `make release` builds ferry, profile-guided),
## then link quality beside recordlinkage/splink and a 1M x 1M backfill,
## then SFTP pulls beside OpenSSH's sftp and rclone (needs tests/install-deps.sh).
bench:
	./scripts/pgo.sh bench
	$(CARGO) bench --locked --bench reconcile
	./tests/install-deps.sh
	$(CARGO) bench --locked --bench transfer

clean:
	rm -rf $(DEMO_HOME)
	$(CARGO) clean
