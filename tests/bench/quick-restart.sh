#!/usr/bin/env bash
# Restarts of one node of three, as a supervisor restarts a crashed process: ROUNDS times,
# node n3 is SIGKILLed and run again, at once (before the others notice it is gone) or
# after DEAD_WAIT (once they have declared it dead), in turn. Each time its HTTP API
# answers, one key is written on n1, and the script measures how long n3 takes to serve
# it. That time covers both ways back: the others must see the new process (membership),
# then push to it rather than to the connection of the process that is gone.
# Everything runs on 127.0.0.1 with fresh data dirs, auth off, and is stopped at the end.
# Needs: target/release/kvs (cargo build --release), curl, python3.
#   usage: tests/bench/quick-restart.sh [ROUNDS] [DEAD_WAIT]   (default 10 rounds, 2.5 s)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kvs="${KVS:-${CARGO_TARGET_DIR:-$root/target}/release/kvs}"
rounds=${1:-10}
dead_wait=${2:-2.5}
work=$(mktemp -d)
trap 'kill -9 $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.2; rm -rf "$work"' EXIT
base=$((19400 + RANDOM % 500 * 10)) # nine ports from here on are ours
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

config() { # name index
  local seeds="[]"
  [ "$2" -gt 0 ] && seeds="[\"127.0.0.1:$((base + 1))\"]"
  cat >"$work/$1.yaml" <<YAML
node_id: $1
http_port: $((base + 3 * $2))
gossip_port: $((base + 3 * $2 + 1))
sync_port: $((base + 3 * $2 + 2))
seed_nodes: $seeds
data_dir: $work/$1-data
cluster_secret: "$secret"
jwt_secret: "quick-restart-jwt-secret-0123456789"
auth_enabled: false
log_level: warn
YAML
}

launch() { # name
  "$kvs" run "$work/$1.yaml" 2>>"$work/$1.log" &
  echo $! >"$work/$1.pid"
  disown
}

answers() { # port
  curl -s -o /dev/null -m 1 -w '%{http_code}' "127.0.0.1:$1/health" | grep -q 200
}

for i in 0 1 2; do
  config "n$((i + 1))" "$i"
  launch "n$((i + 1))"
  until answers $((base + 3 * i)); do sleep 0.05; done
done
sleep 3

times=()
for round in $(seq 1 "$rounds"); do
  pid=$(cat "$work/n3.pid")
  kill -9 "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.005; done
  if [ $((round % 2)) -eq 0 ]; then
    when=dead
    sleep "$dead_wait"
  else
    when=at-once
  fi
  launch n3
  until answers $((base + 6)); do sleep 0.01; done
  start=$(date +%s.%N)
  curl -s -o /dev/null -X PUT -d "\"$round\"" "127.0.0.1:$base/kv/restart/$round"
  until [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "127.0.0.1:$((base + 6))/kv/restart/$round")" = 200 ]; do
    sleep 0.01
  done
  took=$(python3 -c "print(f'{$(date +%s.%N) - $start:.3f}')")
  echo "round $round ($when): n3 served the write after $took s"
  times+=("$when:$took")
  sleep 2
done
python3 - "${times[@]}" <<'PY'
import sys
rows = [arg.split(":") for arg in sys.argv[1:]]
for when in ("at-once", "dead"):
    took = sorted(float(t) for w, t in rows if w == when)
    if took:
        print(f"{when}: {len(took)} restarts, median {took[len(took) // 2]:.3f} s, max {took[-1]:.3f} s")
PY
