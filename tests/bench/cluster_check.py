"""Replication figures of a kvs cluster for compare-etcd.sh.

  cluster_check.py lag-snapshot PORT...        the summed kvs_replication_lag_ms buckets (JSON)
  cluster_check.py lag-report BEFORE AFTER     p50 and p99 (bucket bounds) of the versions between
  cluster_check.py converged PORT...           waits (60 s at most) until every node's /sync shows
                                               the same merkle root and key count; exit 1 if not
"""
import json, re, sys, time, urllib.request

BUCKET = re.compile(r'^kvs_replication_lag_ms_bucket\{le="([^"]+)"\} (\S+)$')


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
        return answer.read().decode()


def lag_snapshot(ports):
    buckets = {}
    for port in ports:
        for line in get(port, "/metrics").splitlines():
            match = BUCKET.match(line)
            if match:
                buckets[match[1]] = buckets.get(match[1], 0) + float(match[2])
    print(json.dumps(buckets))


def lag_report(before_file, after_file):
    before, after = (json.load(open(f)) for f in (before_file, after_file))
    bound = lambda le: float("inf") if le == "+Inf" else float(le)
    delta = sorted(((bound(le), after[le] - before.get(le, 0)) for le in after), key=lambda b: b[0])
    total = delta[-1][1] if delta else 0
    if total <= 0:
        print("replication lag: no versions replicated")
        return
    quantile = lambda q: next(le for le, count in delta if count >= q * total)
    print(f"replication lag over {int(total)} versions: p50 <= {quantile(0.5):g} ms, p99 <= {quantile(0.99):g} ms")


def converged(ports):
    started = time.time()
    while time.time() - started < 60:
        views = [json.loads(get(port, "/sync")) for port in ports]
        roots = {(v["merkle_root"], v["keys"]) for v in views}
        if len(roots) == 1 and not any(v["syncing"] for v in views):
            root, keys = roots.pop()
            print(f"all {len(ports)} nodes hold the same data ({keys} keys, merkle root {root}) "
                  f"{time.time() - started:.1f} s after the load")
            return
        time.sleep(0.2)
    print(f"NOT converged within 60 s: {views}")
    sys.exit(1)


command, args = sys.argv[1], sys.argv[2:]
{"lag-snapshot": lambda: lag_snapshot(args), "lag-report": lambda: lag_report(*args),
 "converged": lambda: converged(args)}[command]()
