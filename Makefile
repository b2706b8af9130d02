# Rowcast: every way we build, run and check the project, in one place.
# `make dev` runs the server with its own Postgres; `make test` runs every check CI runs.

CARGO ?= cargo
ROWCAST := $(CARGO) run --quiet --bin rowcast --
# Where `dev` keeps its state (ROWCAST_DATA_DIR); the embedded cluster is in $(DATA_DIR)/pg.
DATA_DIR ?= $(or $(ROWCAST_DATA_DIR),.rowcast)

# Deployment: set these on the command line, e.g. `make deploy-cloudrun PROJECT=my-proj`.
# Credentials are never here: DATABASE_URL and ROWCAST_JWT_SECRET come from Secret Manager
# (Cloud Run), your shell's environment (App Engine) or a Kubernetes Secret.
PROJECT ?=
REGION ?= europe-west1
INSTANCE ?= rowcast
SERVICE ?= rowcast
VERSION ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
IMAGE ?= $(if $(PROJECT),$(REGION)-docker.pkg.dev/$(PROJECT)/rowcast/rowcast,rowcast):$(VERSION)
# Secret Manager secret names (not values) for Cloud Run.
DATABASE_URL_SECRET ?= rowcast-database-url
JWT_SECRET_SECRET ?= rowcast-jwt-secret
K8S_MANIFEST ?= deploy/k8s/rowcast.yaml
# Benchmarks other parts of the project define; `make bench` runs the ones that exist.
BENCHES ?= bench-capture bench-rest bench-realtime bench-yardstick

.PHONY: dev serve migrate test fmt lint check build clean psql token bench image \
	need-project deploy-cloudrun deploy-appengine deploy-k8s bench-capture bench-rest bench-realtime \
	bench-yardstick

## Run the server for development (embedded Postgres in ./.rowcast unless DATABASE_URL is set)
## with the todo example: its migrations, and its page on http://127.0.0.1:5173 (examples/todo).
## Without the SDK in the tree (client-sdk-ts/), just the server.
ifneq ($(wildcard client-sdk-ts/src/index.ts),)
dev: example-deps
	$(CARGO) build --quiet --bin rowcast
	ROWCAST_BIN=$(CURDIR)/target/debug/rowcast ROWCAST_DATA_DIR=$(DATA_DIR) node examples/todo/scripts/dev.mjs
else
dev:
	$(ROWCAST) dev
endif

## Run the server against DATABASE_URL (required).
serve:
	$(ROWCAST) serve

## Apply the server's and the app's migrations and exit.
migrate:
	$(ROWCAST) migrate

## Everything CI checks: formatting, lints, and all tests (starts its own Postgres).
test: fmt lint
	$(CARGO) test --workspace --all-targets --locked
	$(MAKE) sdk-test
	$(MAKE) example-test

## The TypeScript SDK (client-sdk-ts): npm ci, type check, lint, unit tests, build, bundle and
## Hermes checks, then end-to-end tests against a real `rowcast dev` (the debug binary).
## `npm ci` runs when package-lock.json changed since the last install (better-sqlite3 builds
## from source here, which takes minutes).
.PHONY: sdk-test
sdk-test:
	@# The same build as `cargo test` above (same features), so after it nothing recompiles.
	$(CARGO) test --workspace --all-targets --locked --no-run
	cd client-sdk-ts && { cmp -s package-lock.json node_modules/.rowcast-installed-lock || \
	  { npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.rowcast-installed-lock; }; }
	cd client-sdk-ts && ROWCAST_BIN="$(CURDIR)/target/debug/rowcast" npm test

fmt:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## Capture benchmark: write cost of capture (NOTIFY on/off) and commit-to-reader latency.
## Not part of `make test`; results go in docs/benchmarks.md.
bench-capture:
	$(CARGO) run --release --locked -p rowcast-bench --bin rowcast-bench -- capture

## The release binary, built exactly as the Dockerfile and CI build it.
build:
	$(CARGO) build --release --locked --bin rowcast

## psql on DATABASE_URL, or on the dev database while `make dev` runs (its port is line 4
## of postmaster.pid; the embedded cluster trusts the local `rowcast` user).
psql:
	@if [ -n "$$DATABASE_URL" ]; then exec psql "$$DATABASE_URL"; fi; \
	pidfile="$(DATA_DIR)/pg/postmaster.pid"; \
	if [ ! -f "$$pidfile" ]; then echo "no dev database is running: start \`make dev\` (or set DATABASE_URL)" >&2; exit 1; fi; \
	exec psql -h 127.0.0.1 -p "$$(sed -n 4p "$$pidfile")" -U rowcast rowcast

## Print a dev access token: `make token SUB=<user uuid>` (a new id without SUB), or
## `make token ROLE=service`. Signed with ROWCAST_JWT_SECRET or the dev secret.
token:
	@$(ROWCAST) token $(if $(SUB),--sub $(SUB)) $(if $(ROLE),--role $(ROLE)) --data-dir "$(DATA_DIR)"

## Run every benchmark target that exists (results go in docs/benchmarks.md).
bench:
	@for b in $(BENCHES); do \
	  if $(MAKE) -s -n $$b >/dev/null 2>&1; then $(MAKE) $$b || exit 1; \
	  else echo "make bench: no $$b target yet, skipping"; fi; \
	done

## The container image (needs a Docker engine): `make image IMAGE=rowcast:dev`.
image:
	docker build -t $(IMAGE) .

need-project:
	@test -n "$(PROJECT)" || { echo "set PROJECT=<gcp project id>" >&2; exit 1; }

## Cloud Run: build the image with Cloud Build, deploy it with the Cloud SQL socket and the
## two secrets from Secret Manager. Cloud Run gives 10 s after SIGTERM, hence the 8 s drain.
deploy-cloudrun: need-project
	gcloud builds submit --project $(PROJECT) --tag $(IMAGE) .
	gcloud run deploy $(SERVICE) --project $(PROJECT) --region $(REGION) --image $(IMAGE) \
	  --port 8080 --timeout 3600 --no-cpu-throttling --min-instances 1 \
	  --add-cloudsql-instances $(PROJECT):$(REGION):$(INSTANCE) \
	  --set-env-vars ROWCAST_LISTEN=0.0.0.0:8080,ROWCAST_SHUTDOWN_TIMEOUT=8s \
	  --set-secrets DATABASE_URL=$(DATABASE_URL_SECRET):latest,ROWCAST_JWT_SECRET=$(JWT_SECRET_SECRET):latest

## App Engine flexible (custom runtime): deploy the image with deploy/appengine/app.yaml plus
## DATABASE_URL and ROWCAST_JWT_SECRET from your environment (written to a temporary copy).
deploy-appengine: need-project
	@test -n "$$DATABASE_URL" && test -n "$$ROWCAST_JWT_SECRET" || \
	  { echo "export DATABASE_URL and ROWCAST_JWT_SECRET first" >&2; exit 1; }
	gcloud builds submit --project $(PROJECT) --tag $(IMAGE) .
	@dir=$$(mktemp -d) && trap 'rm -rf "$$dir"' EXIT && \
	sed 's|CLOUD_SQL_INSTANCE|$(PROJECT):$(REGION):$(INSTANCE)|' deploy/appengine/app.yaml > "$$dir/app.yaml" && \
	printf '  DATABASE_URL: "%s"\n  ROWCAST_JWT_SECRET: "%s"\n' "$$DATABASE_URL" "$$ROWCAST_JWT_SECRET" >> "$$dir/app.yaml" && \
	echo "gcloud app deploy $$dir/app.yaml --project $(PROJECT) --image-url $(IMAGE)" && \
	gcloud app deploy "$$dir/app.yaml" --project $(PROJECT) --image-url $(IMAGE) --quiet

## Kubernetes: apply deploy/k8s/rowcast.yaml with IMAGE (needs the `rowcast` Secret, see the file).
deploy-k8s:
	sed 's|image: rowcast:latest|image: $(IMAGE)|' $(K8S_MANIFEST) | kubectl apply -f -
	kubectl rollout status deployment/rowcast

clean:
	$(CARGO) clean
	rm -rf .rowcast

## REST benchmark (wrk): PK read and a 50-row page with one embed, 64 connections.
bench-rest:
	$(CARGO) build --release --bin rowcast
	sh bench/rest/run.sh
	sh bench/rest/ab.sh

## Realtime benchmark: latency, throughput, loss, memory and CPU per message over WebSockets
## (10k connections; raises the open-file limit to the hard limit). Not part of `make test`; results go in
## docs/benchmarks.md. Smaller runs: BENCH_SCENARIOS=idle BENCH_IDLE_CONNS=1000 make bench-realtime
bench-realtime:
	$(CARGO) build --release --locked --bin rowcast -p rowcast
	ulimit -n $$(ulimit -Hn) && $(CARGO) run --release --locked -p rowcast-bench --bin rowcast-bench-realtime

## Realtime yardstick (issue 13): the naive Node server in bench/yardstick (pg LISTEN on a
## row_to_json trigger, ws broadcast) and Rowcast under the same load, side by side, with
## ratios. Sizes: BENCH_YARD_SIZES=100x200,1000x20,5000x4,1000x100 (subscribers x writes/s),
## BENCH_YARD_ROUNDS=3 BENCH_YARD_SECONDS=10. Results go in docs/benchmarks.md.
bench-yardstick:
	$(CARGO) build --release --locked -p rowcast -p rowcast-bench
	cd bench/yardstick && { cmp -s package-lock.json node_modules/.rowcast-installed-lock || \
	  { npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.rowcast-installed-lock; }; }
	ulimit -n $$(ulimit -Hn) && BENCH_SCENARIOS=yardstick target/release/rowcast-bench-realtime

## The todo example (examples/todo): its page, built with Vite on the SDK's sources
## (client-sdk-ts/src), and its browser tests (Playwright driving Debian's Chromium at
## /usr/bin/chromium; `.ci/run` installs it). `npm ci` runs only when package-lock.json changed.
EXAMPLE := examples/todo
.PHONY: example-deps example-build example-test
example-deps:
	@test -f client-sdk-ts/src/index.ts || { echo "examples/todo needs the SDK in client-sdk-ts/" >&2; exit 1; }
	cd $(EXAMPLE) && { [ node_modules/.package-lock.json -nt package-lock.json ] || \
	  npm ci --prefer-offline --no-audit --no-fund --loglevel=error; }

example-build: example-deps
	cd $(EXAMPLE) && npm run typecheck && npm run build

example-test: example-build
	$(CARGO) test --workspace --all-targets --locked --no-run
	cd $(EXAMPLE) && ROWCAST_BIN=$(CURDIR)/target/debug/rowcast npx playwright test

