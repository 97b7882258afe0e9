#!/usr/bin/env bash
# Memory, disk and start-up of one node holding KEYS keys of 256 bytes (issue 12): the
# keys are written by `kvs bench` in random order over 64 connections (history off, the
# audit log on, as by default otherwise); then the node's peak RSS (and how much of it is
# the memory map of the data file), the data file's bytes against the raw keys and values,
# `kvs compact` (bytes after, time), and the time from a restart to `/health` with the RSS
# after it. Loopback only, ports 18481-18483; the node
# stops and its data dir is removed at the end.
# Needs: target/release/kvs (cargo build --release), curl.
#   usage: tests/bench/million-keys.sh [KEYS]   (default 1000000)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kvs="${CARGO_TARGET_DIR:-$root/target}/release/kvs"
keys=${1:-1000000}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

. "$here/bench-config.sh"
bench_config m1 18481 18482 18483 "$work/data" "" | sed 's/^tamper_logging_enabled: false/tamper_logging_enabled: true/' \
  > "$work/m1.yaml"
echo "clustering_enabled: false" >> "$work/m1.yaml"

start() { # sets pid, and started_ms: the ms from the process start until /health answers
  local began=$(date +%s%N)
  "$kvs" run "$work/m1.yaml" >/dev/null 2>>"$work/m1.log" &
  pid=$!
  until curl -sf http://127.0.0.1:18481/health >/dev/null; do sleep 0.01; done
  started_ms=$(( ($(date +%s%N) - began) / 1000000 ))
}
stop() { kill -TERM "$pid"; wait "$pid" || true; }
rss_mib() { awk -v f="$1" '$1 == f":" { print int($2 / 1024) }' "/proc/$pid/status"; }
data_bytes() { stat -c %s "$work/data/data.mdb"; }

start
"$kvs" bench --addr http://127.0.0.1:18481 --keys "$keys" --duration 1s --get-ratio 0 \
  --value-size 256 --connections 64 >/dev/null 2>&1
peak=$(rss_mib VmHWM)
anon=$(rss_mib RssAnon)
file=$(rss_mib RssFile)
stop
raw=$(awk -v n="$keys" 'BEGIN { for (i = 0; i < n; i++) s += 6 + length(i) + 256; print s }')
loaded=$(data_bytes)
began=$(date +%s%N)
"$kvs" compact "$work/m1.yaml" >/dev/null
compact_ms=$(( ($(date +%s%N) - began) / 1000000 ))
compacted=$(data_bytes)
start
rss_after=$(rss_mib VmRSS)
held=$(curl -sf http://127.0.0.1:18481/sync | grep -o '"keys":[0-9]*' | cut -d: -f2)
stop

ratio() { awk -v a="$1" -v b="$raw" 'BEGIN { printf "%.2f", a / b }'; }
echo "keys held: $held of $keys; raw keys and values: $raw bytes"
echo "peak RSS while loading: $peak MiB (at the end: $anon MiB anonymous, $file MiB of mapped files)"
echo "data file after the load: $loaded bytes ($(ratio "$loaded")x raw)"
echo "after kvs compact ($compact_ms ms): $compacted bytes ($(ratio "$compacted")x raw)"
echo "start-up with $held keys: $started_ms ms to /health; RSS after: $rss_after MiB"
