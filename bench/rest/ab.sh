#!/bin/sh
# `make bench-rest` (second part): the cost of the HTTP observability layer (request ids,
# access log, request metrics) on a primary-key read, as an alternated A/B in one run.
# Two servers from the same release binary, each with its own embedded Postgres:
#   A: observability on (log level BENCH_LOG: `warn` by default, as run.sh and the earlier
#      measurement; `info` adds one JSON access-log line per request, written to a file);
#   B: ROWCAST_HTTP_OBSERVE=false (no request ids, access logs or HTTP metrics).
# wrk alternates between them (A B A B ...), so background load hits both alike; the
# script prints each round and the median ratio B/A.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin="${BENCH_BIN:-$root/target/release/rowcast}"
duration=${BENCH_DURATION:-10s}
rounds=${BENCH_ROUNDS:-3}
conns=${BENCH_CONNECTIONS:-64}
threads=${BENCH_THREADS:-2}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
pids=""
dirs=""
cleanup() {
  for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
  for p in $pids; do wait "$p" 2>/dev/null || true; done
  for d in $dirs; do rm -rf "$d"; done
}
trap cleanup EXIT INT TERM

start() { # name port args...
  name=$1; port=$2; shift 2
  data=$(mktemp -d /tmp/rowcast-ab-XXXXXX)
  chmod 755 "$data"
  dirs="$dirs $data"
  "$bin" dev --data-dir "$data" --listen "127.0.0.1:$port" --app-migrations "$here/migrations" \
    --log-format json "$@" >"$data/out" 2>"$data/log" &
  pids="$pids $!"
  for i in $(seq 1 300); do
    if curl -fs "http://127.0.0.1:$port/ready" >/dev/null 2>&1; then break; fi
    sleep 0.2
  done
  [ -s "$data/jwt-secret" ] || { echo "server $name did not start:" >&2; tail -5 "$data/log" >&2; exit 1; }
  last_data=$data
}

token_for() { # data dir
  python3 - "$1/jwt-secret" <<'PY'
import base64, hashlib, hmac, json, sys, time
secret = open(sys.argv[1]).read().strip().encode()
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
now = int(time.time())
claims = {"sub": "00000000-0000-0000-0000-000000000001", "role": "authenticated",
          "iss": "rowcast", "aud": "rowcast", "iat": now, "exp": now + 3600}
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
print(head + "." + b64(hmac.new(secret, head.encode(), hashlib.sha256).digest()))
PY
}

port_a=${BENCH_PORT_A:-18081}
port_b=${BENCH_PORT_B:-18082}
log=${BENCH_LOG:-warn}
start A "$port_a" --log "$log"; data_a=$last_data
ROWCAST_HTTP_OBSERVE=false start B "$port_b" --log "$log"; data_b=$last_data
token_a=$(token_for "$data_a")
token_b=$(token_for "$data_b")
url_a="http://127.0.0.1:$port_a/rest/v1/items?id=eq.4242"
url_b="http://127.0.0.1:$port_b/rest/v1/items?id=eq.4242"
for pair in "$token_a $url_a" "$token_b $url_b"; do
  set -- $pair
  for i in $(seq 1 100); do
    if curl -fs -H "Authorization: Bearer $1" "$2" | grep -q '"id"'; then break; fi
    sleep 0.2
  done
  wrk -t"$threads" -c"$conns" -d5s -H "Authorization: Bearer $1" "$2" >/dev/null
done
# Check that A really observes and B really does not.
curl -fsi -H "Authorization: Bearer $token_a" "$url_a" | grep -qi '^x-request-id' || { echo "A has no request id" >&2; exit 1; }
if curl -fsi -H "Authorization: Bearer $token_b" "$url_b" | grep -qi '^x-request-id'; then echo "B still observes" >&2; exit 1; fi

measure() { # token url
  wrk -t"$threads" -c"$conns" -d"$duration" --latency -H "Authorization: Bearer $1" "$2" \
    | awk '/Requests\/sec/ {rps=$2} $1 == "99%" {p99=$2} END {print rps, p99}'
}
ratios=""
for r in $(seq 1 "$rounds"); do
  set -- $(measure "$token_a" "$url_a"); a=$1; pa=$2
  set -- $(measure "$token_b" "$url_b"); b=$1; pb=$2
  ratio=$(python3 -c "print(f'{$a / $b:.3f}')")
  ratios="$ratios $ratio"
  echo "round $r: observe on ${a} req/s (p99 ${pa}), off ${b} req/s (p99 ${pb}), on/off ${ratio}"
done
python3 -c "import statistics,sys; r=[float(x) for x in sys.argv[1:]]; m=statistics.median(r); print(f'median on/off {m:.3f}: the layer costs {100*(1-m):.1f}% of a primary-key read')" $ratios
lines=$(wc -l < "$data_a/log")
echo "server A wrote $lines log lines (log level $log)"
