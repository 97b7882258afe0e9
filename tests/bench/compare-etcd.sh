#!/usr/bin/env bash
# Compares kvs with etcd 3.4 (Debian `etcd-server`, JSON gateway) under the same wrk load:
# 64 connections, 2 wrk threads, 256-byte values, 10,000 preloaded keys, GET-only then
# PUT-only. Both servers run on 127.0.0.1 with fresh data dirs; everything stops at the end.
# Needs: target/release/kvs (cargo build --release), etcd, wrk, python3.
#   usage: tests/bench/compare-etcd.sh [DURATION]   (default 10s)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
duration=${1:-10s}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
kvs_port=18481; etcd_port=18482; etcd_peer=18483; keys=10000

python3 "$here/wrk_scripts.py" "$work" "$keys"

printf 'node_id: bench\nhttp_port: %s\nauth_enabled: false\nclustering_enabled: false\nlog_level: warn\ndata_dir: %s/kvs-data\n' \
  "$kvs_port" "$work" > "$work/kvs.yaml"
"$root/target/release/kvs" run "$work/kvs.yaml" 2>"$work/kvs.log" &
etcd --data-dir "$work/etcd-data" --listen-client-urls "http://127.0.0.1:$etcd_port" \
  --advertise-client-urls "http://127.0.0.1:$etcd_port" --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "default=http://127.0.0.1:$etcd_peer" --log-level error >"$work/etcd.log" 2>&1 &
sleep 2

python3 "$here/preload.py" "$kvs_port" "$etcd_port" "$keys"

run() { # name port script
  echo "== $1"
  wrk -t2 -c64 -d"$duration" --latency -s "$work/$3" "http://127.0.0.1:$2" | grep -E 'Requests/sec|50%|99%|Non-2xx|Socket errors'
}
run "kvs GET"  "$kvs_port"  kvs-get.lua
run "etcd GET (/v3/kv/range)" "$etcd_port" etcd-get.lua
run "kvs PUT"  "$kvs_port"  kvs-put.lua
run "etcd PUT (/v3/kv/put)" "$etcd_port" etcd-put.lua
