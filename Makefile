# Rowcast: every way we build, run and check the project, in one place.
# `make dev` runs the server with its own Postgres; `make test` runs every check CI runs.

CARGO ?= cargo
ROWCAST := $(CARGO) run --quiet --bin rowcast --

.PHONY: dev serve migrate test fmt lint check build clean bench-capture bench-realtime

## Run the server for development (embedded Postgres in ./.rowcast unless DATABASE_URL is set).
dev:
	$(ROWCAST) dev

## Run the server against DATABASE_URL (required).
serve:
	$(ROWCAST) serve

## Apply the server's and the app's migrations and exit.
migrate:
	$(ROWCAST) migrate

## Everything CI checks: formatting, lints, and all tests (starts its own Postgres).
test: fmt lint
	$(CARGO) test --workspace --all-targets --locked

fmt:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## Capture benchmark: write cost of capture (NOTIFY on/off) and commit-to-reader latency.
## Not part of `make test`; results go in docs/benchmarks.md.
bench-capture:
	$(CARGO) run --release --locked -p rowcast-bench -- capture

build:
	$(CARGO) build --release --bin rowcast

clean:
	$(CARGO) clean
	rm -rf .rowcast

## Realtime benchmark: latency, throughput, loss, memory and CPU per message over WebSockets
## (10k connections; raises the open-file limit to the hard limit). Not part of `make test`; results go in
## docs/benchmarks.md. Smaller runs: BENCH_SCENARIOS=idle BENCH_IDLE_CONNS=1000 make bench-realtime
bench-realtime:
	$(CARGO) build --release --locked --bin rowcast -p rowcast
	ulimit -n $$(ulimit -Hn) && $(CARGO) run --release --locked -p rowcast-bench --bin rowcast-bench-realtime
