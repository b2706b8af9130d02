#!/bin/sh
# `make bench-rest`: the REST API under wrk. Starts the release server with its own fresh
# embedded Postgres (seeded by ./migrations), then measures a primary-key read and a 50-row
# page with one embed at 64 connections. Prints req/s and p99 for docs/benchmarks.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin="${BENCH_BIN:-$root/target/release/rowcast}"
port=${BENCH_PORT:-18080}
duration=${BENCH_DURATION:-20s}
conns=${BENCH_CONNECTIONS:-64}
threads=${BENCH_THREADS:-2}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
data=$(mktemp -d /tmp/rowcast-bench-XXXXXX)
chmod 755 "$data"
"$bin" dev --data-dir "$data" --listen "127.0.0.1:$port" --app-migrations "$here/migrations" \
  --log-format pretty --log warn ${BENCH_SERVER_ARGS:-} &
server=$!
cleanup() { kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT INT TERM
for i in $(seq 1 300); do
  if curl -fs "http://127.0.0.1:$port/ready" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
token=$(python3 - "$data/jwt-secret" <<'PY'
import base64, hashlib, hmac, json, sys, time
secret = open(sys.argv[1]).read().strip().encode()
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
now = int(time.time())
claims = {"sub": "00000000-0000-0000-0000-000000000001", "role": "authenticated",
          "iss": "rowcast", "aud": "rowcast", "iat": now, "exp": now + 3600}
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
print(head + "." + b64(hmac.new(secret, head.encode(), hashlib.sha256).digest()))
PY
)
base="http://127.0.0.1:$port/rest/v1"
for i in $(seq 1 100); do
  if curl -fs -H "Authorization: Bearer $token" "$base/items?id=eq.1" | grep -q '"id"'; then break; fi
  sleep 0.2
done
run() {
  name=$1; url=$2
  curl -fs -H "Authorization: Bearer $token" "$url" >/dev/null || { echo "$name: request failed" >&2; exit 1; }
  # Warm up, then measure.
  wrk -t"$threads" -c"$conns" -d5s -H "Authorization: Bearer $token" "$url" >/dev/null
  out=$(wrk -t"$threads" -c"$conns" -d"$duration" --latency -H "Authorization: Bearer $token" "$url")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  errors=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  echo "$name: ${rps} req/s, p50 ${p50}, p99 ${p99}, non-2xx ${errors:-0}"
}
run "pk-read" "$base/items?id=eq.4242"
run "page-50-embed" "$base/items?select=id,name,price,categories(name)&order=id&limit=50&offset=100"
