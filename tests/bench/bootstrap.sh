#!/usr/bin/env bash
# Times a bootstrap: node 1 holds KEYS keys of 256 bytes (history and audit off); node 2
# starts empty with node 1 as its seed; timed from node 2's start until its `/sync` shows
# KEYS keys and `syncing: false`, and until a listing by time answers (the indexes a bulk
# load builds at its end are there). Prints both times and MB/s of values, then node 2's
# disk blocks and peak RSS. Loopback only, free ports from the 18xxx range; everything
# stops at the end. Node 1's data is kept in $KVS_BOOTSTRAP_CACHE (default
# /tmp/kvs-bootstrap-KEYS) so that reruns skip the preload.
# Needs: target/release/kvs (cargo build --release), curl, jq.
#   usage: tests/bench/bootstrap.sh [KEYS]   (default 1000000)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kvs="${CARGO_TARGET_DIR:-$root/target}/release/kvs"
keys=${1:-1000000}
cache=${KVS_BOOTSTRAP_CACHE:-/tmp/kvs-bootstrap-$keys}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

. "$here/bench-config.sh"

bench_config n1 18491 18492 18493 "$cache" "" > "$work/n1.yaml"
bench_config n2 18494 18495 18496 "$work/n2-data" "\"127.0.0.1:18492\"" > "$work/n2.yaml"
"$kvs" run "$work/n1.yaml" 2>"$work/n1.log" &
until curl -sf http://127.0.0.1:18491/health >/dev/null; do sleep 0.1; done
held=$(curl -sf http://127.0.0.1:18491/sync | jq .keys)
if [ "$held" -lt "$keys" ]; then
  echo "preloading $keys keys into $cache"
  "$kvs" bench --addr http://127.0.0.1:18491 --keys "$keys" --duration 1s --get-ratio 0 \
    --value-size 256 >/dev/null
fi
held=$(curl -sf http://127.0.0.1:18491/sync | jq .keys)
start=$(date +%s.%N)
"$kvs" run "$work/n2.yaml" 2>"$work/n2.log" &
n2=$!
until [ "$(curl -sf http://127.0.0.1:18494/sync | jq -c '[.keys, .syncing]' 2>/dev/null)" = "[$held,false]" ]; do
  sleep 0.05
done
end=$(date +%s.%N)
# A listing by time reads the by-time index, which a bulk load builds at its end: it
# answers once the node is fully built.
curl -sf -o /dev/null "http://127.0.0.1:18494/kv?since=0&limit=1"
built=$(date +%s.%N)
python3 - "$start" "$end" "$built" "$held" <<'PY'
import sys
start, end, built, keys = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
for what, at in (("synced (/sync: all keys, syncing false)", end), ("indexes built (a listing by time answers)", built)):
    took = at - start
    print(f"bootstrap of {keys} keys, {what}: {took:.1f} s, {keys / took:,.0f} keys/s, {keys * 256 / took / 1e6:.1f} MB/s of values")
PY
# What the new node holds: disk blocks in use (LMDB's file is sparse) and its peak RSS.
disk=$(du -s --block-size=1 "$work/n2-data" | cut -f1)
peak=$(awk '/VmHWM/ {print $2}' "/proc/$n2/status")
echo "node 2 after the bootstrap: disk $((disk / 1000000)) MB ($(python3 -c "print(f'{$disk / ($held * 256):.2f}')")x the values), peak RSS $((peak / 1024)) MiB"
