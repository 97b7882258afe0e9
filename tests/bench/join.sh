#!/usr/bin/env bash
# Times a node joining a cluster of three: three members hold the same KEYS keys of
# 256 bytes (node 1's data of tests/bench/bootstrap.sh, copied), and an empty fourth node
# joins with member 1 as its seed, while each member sees it join. Timed from its start
# until its indexes are built (a listing by time answers); prints the time, MB/s of values
# and the versions it received (KEYS when it is sent the store once). Loopback only, ports
# from the 18xxx range; everything stops at the end and the copies are removed.
# Needs: target/release/kvs, curl, jq, and the cache tests/bench/bootstrap.sh fills.
#   usage: tests/bench/join.sh [KEYS]   (default 1000000)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kvs="${CARGO_TARGET_DIR:-$root/target}/release/kvs"
keys=${1:-1000000}
cache=${KVS_BOOTSTRAP_CACHE:-/tmp/kvs-bootstrap-$keys}
[ -f "$cache/data.mdb" ] || { echo "no $cache: run tests/bench/bootstrap.sh $keys first" >&2; exit 2; }
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

. "$here/bench-config.sh"
config() { # name port-base data seed
  bench_config "$1" $(($2 + 1)) $(($2 + 2)) $(($2 + 3)) "$3" "$4"
}

seed='"127.0.0.1:18502"'
config m1 18500 "$cache" "" > "$work/m1.yaml"
for m in 2 3; do
  mkdir "$work/m$m"
  cp -r "$cache/data.mdb" "$cache/wal" "$work/m$m/"
  config "m$m" $((18500 + 10 * (m - 1))) "$work/m$m" "$seed" > "$work/m$m.yaml"
done
config n4 18530 "$work/n4" "$seed" > "$work/n4.yaml"
for m in m1 m2 m3; do "$kvs" run "$work/$m.yaml" 2>"$work/$m.log" & done
for port in 18501 18511 18521; do
  until [ "$(curl -sf "http://127.0.0.1:$port/health" | jq -r .status)" = ok ]; do sleep 0.1; done
done
until [ "$(curl -sf http://127.0.0.1:18501/health | jq .members)" = 3 ]; do sleep 0.1; done
held=$(curl -sf http://127.0.0.1:18501/sync | jq .keys)
start=$(date +%s.%N)
"$kvs" run "$work/n4.yaml" 2>"$work/n4.log" &
until [ "$(curl -sf http://127.0.0.1:18531/sync | jq -c '[.keys, .syncing]' 2>/dev/null)" = "[$held,false]" ]; do
  sleep 0.05
done
curl -sf -o /dev/null "http://127.0.0.1:18531/kv?since=0&limit=1"
built=$(date +%s.%N)
received=$(curl -sf http://127.0.0.1:18531/metrics | awk '/^kvs_sync_versions_received_total/ {print $2}')
python3 - "$start" "$built" "$held" "$received" <<'PY'
import sys
start, built, keys, received = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(float(sys.argv[4]))
took = built - start
print(f"a 4th node joining 3 members with {keys} keys: indexes built in {took:.1f} s, "
      f"{keys * 256 / took / 1e6:.1f} MB/s of values, {received:,} versions received")
PY
