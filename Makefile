# Rowcast: every way we build, run and check the project, in one place.
# `make dev` runs the server with its own Postgres; `make test` runs every check CI runs.

CARGO ?= cargo
ROWCAST := $(CARGO) run --quiet --bin rowcast --

.PHONY: dev serve migrate test fmt lint check build clean bench-rest

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

build:
	$(CARGO) build --release --bin rowcast

clean:
	$(CARGO) clean
	rm -rf .rowcast

## REST benchmark (wrk): PK read and a 50-row page with one embed, 64 connections.
bench-rest:
	$(CARGO) build --release --bin rowcast
	sh bench/rest/run.sh
