#!/usr/bin/env bash
# Compares kvs with etcd 3.4 (Debian `etcd-server`, JSON gateway) and nginx under the
# same wrk load, with one command: 256-byte values, 10,000 preloaded keys, random keys,
# fresh data dirs, everything on 127.0.0.1 and stopped at the end.
#   1. one node against one etcd member: GET, then durable PUT (wrk -t2 -c64);
#   2. the ceiling: nginx (worker_processes auto) answering a fixed 256-byte body;
#   3. three kvs nodes against a three-member etcd cluster: PUTs spread over the three
#      (one wrk -t1 -c21 per node, run together), then the replication lag (from the
#      nodes' kvs_replication_lag_ms) and a check that all three hold the same data;
#   4. resident memory (peak) and disk bytes of each server after its single-node runs.
# Each run prints requests/s and latency p50, p99, p99.9 and max.
# Needs: target/release/kvs (cargo build --release), etcd, wrk, nginx, python3
#   (apt-get install etcd-server wrk nginx).
#   usage: tests/bench/compare-etcd.sh [DURATION]   (default 10s; the issue asks for 60s)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kvs="${CARGO_TARGET_DIR:-$root/target}/release/kvs"
duration=${1:-10s}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
keys=10000
base=$((18400 + RANDOM % 500 * 10)) # ten ports from here on are ours
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

python3 "$here/wrk_scripts.py" "$work" "$keys"

kvs_node() { # name http gossip sync [seed-gossip-port]
  local seeds="[]"
  [ -n "${5:-}" ] && seeds="[\"127.0.0.1:$5\"]"
  cat >"$work/$1.yaml" <<YAML
node_id: $1
http_port: $2
gossip_port: $3
sync_port: $4
seed_nodes: $seeds
data_dir: $work/$1-data
cluster_secret: "$secret"
jwt_secret: "compare-etcd-jwt-secret-0123456789"
auth_enabled: false
log_level: warn
YAML
  "$kvs" run "$work/$1.yaml" 2>"$work/$1.log" &
}

etcd_member() { # name client peer initial-cluster
  etcd --name "$1" --data-dir "$work/$1-data" \
    --listen-client-urls "http://127.0.0.1:$2" --advertise-client-urls "http://127.0.0.1:$2" \
    --listen-peer-urls "http://127.0.0.1:$3" --initial-advertise-peer-urls "http://127.0.0.1:$3" \
    --initial-cluster "$4" --log-level error >"$work/$1.log" 2>&1 &
}

wait_http() { # port path [curl arguments]
  local port=$1 path=$2; shift 2
  for _ in $(seq 200); do curl -sf -o /dev/null "$@" "http://127.0.0.1:$port$path" && return; sleep 0.1; done
  echo "nothing answers on port $port; the last lines of each server's log:" >&2
  tail -n 3 "$work"/*.log >&2 || true
  exit 1
}
wait_etcd() { wait_http "$1" /v3/kv/range -d '{"key":"eA=="}'; }

run() { # label port script [threads connections]
  echo "== $1"
  wrk -t"${4:-2}" -c"${5:-64}" -d"$duration" -s "$work/$3" "http://127.0.0.1:$2" |
    grep -E 'Requests/sec|latency-ms|Non-2xx|Socket errors'
}

memory_and_disk() { # label pid data-dir
  local peak rss
  peak=$(awk '/VmHWM/ {print $2}' "/proc/$2/status")
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$2/status")
  echo "== $1 memory and disk: peak RSS $((peak / 1024)) MiB, RSS now $((rss / 1024)) MiB, data dir $(du -sb "$3" | cut -f1) bytes"
}

echo "# 1. one node against one etcd member ($keys keys, $duration per run)"
kvs_node single $base $((base + 1)) $((base + 2))
kvs_pid=$!
etcd_member solo $((base + 3)) $((base + 4)) "solo=http://127.0.0.1:$((base + 4))"
etcd_pid=$!
wait_http $base /health
wait_etcd $((base + 3))
python3 "$here/preload.py" "$base" $((base + 3)) "$keys"
run "kvs GET" $base kvs-get.lua
run "etcd GET (/v3/kv/range)" $((base + 3)) etcd-get.lua
run "kvs PUT" $base kvs-put.lua
run "etcd PUT (/v3/kv/put)" $((base + 3)) etcd-put.lua
memory_and_disk kvs $kvs_pid "$work/single-data"
memory_and_disk etcd $etcd_pid "$work/solo-data"
kill $kvs_pid $etcd_pid; wait $kvs_pid $etcd_pid 2>/dev/null || true

echo "# 2. the ceiling: nginx, worker_processes auto, a fixed 256-byte body"
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes auto;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx; uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server { listen 127.0.0.1:$((base + 5)); location / { return 200 '$(printf 'x%.0s' $(seq 256))'; } }
}
NGINX
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
nginx_pid=$!
wait_http $((base + 5)) /
run "nginx GET (fixed body)" $((base + 5)) nginx-get.lua
kill $nginx_pid; wait $nginx_pid 2>/dev/null || true

echo "# 3. three kvs nodes against a three-member etcd cluster, PUTs on all three"
cluster_base=$((base + 10))
kvs_node a $cluster_base $((cluster_base + 1)) $((cluster_base + 2))
kvs_node b $((cluster_base + 3)) $((cluster_base + 4)) $((cluster_base + 5)) $((cluster_base + 1))
kvs_node c $((cluster_base + 6)) $((cluster_base + 7)) $((cluster_base + 8)) $((cluster_base + 1))
kvs_ports="$cluster_base $((cluster_base + 3)) $((cluster_base + 6))"
etcd_base=$((base + 30))
members="e1=http://127.0.0.1:$((etcd_base + 1)),e2=http://127.0.0.1:$((etcd_base + 3)),e3=http://127.0.0.1:$((etcd_base + 5))"
etcd_member e1 $etcd_base $((etcd_base + 1)) "$members"
etcd_member e2 $((etcd_base + 2)) $((etcd_base + 3)) "$members"
etcd_member e3 $((etcd_base + 4)) $((etcd_base + 5)) "$members"
etcd_ports="$etcd_base $((etcd_base + 2)) $((etcd_base + 4))"
for port in $kvs_ports; do wait_http "$port" /health; done
for port in $etcd_ports; do wait_etcd "$port"; done
python3 "$here/preload.py" "$cluster_base" "$etcd_base" "$keys"
python3 "$here/cluster_check.py" converged $kvs_ports
spread() { # label script ports...
  local label=$1 script=$2; shift 2
  echo "== $label (one wrk -t1 -c21 per node, together)"
  for port in "$@"; do
    wrk -t1 -c21 -d"$duration" -s "$work/$script" "http://127.0.0.1:$port" >"$work/wrk-$port.out" &
  done
  wait $(jobs -p | tail -n $#) 2>/dev/null || true
  for port in "$@"; do grep -E 'Requests/sec|latency-ms|Non-2xx' "$work/wrk-$port.out" | sed "s/^/  $port: /"; done
  cat "$work"/wrk-*.out | awk '/Requests\/sec/ {sum += $2} END {printf "  total: %.0f requests/s\n", sum}'
  rm -f "$work"/wrk-*.out
}
python3 "$here/cluster_check.py" lag-snapshot $kvs_ports >"$work/lag-before.json"
spread "kvs PUT, 3 nodes" kvs-put.lua $kvs_ports
python3 "$here/cluster_check.py" lag-snapshot $kvs_ports >"$work/lag-after.json"
python3 "$here/cluster_check.py" converged $kvs_ports
python3 "$here/cluster_check.py" lag-report "$work/lag-before.json" "$work/lag-after.json"
spread "etcd PUT, 3 members" etcd-put.lua $etcd_ports
