"""How long each kind of thread of the running kvs and wrk processes ran and waited for a
core over a span: sums each thread's /proc/PID/task/TID/schedstat (run time, time on the
run queue, wake-ups) by process and thread name. Run it during a load, e.g. section 3 of
compare-etcd.sh:  python3 tests/bench/thread-waits.py 6"""
import collections
import os
import sys
import time


def sample():
    threads = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            process = open(f"/proc/{pid}/comm").read().strip()
            if process not in ("kvs", "wrk"):
                continue
            for tid in os.listdir(f"/proc/{pid}/task"):
                name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
                ran, waited, wakes = map(int, open(f"/proc/{pid}/task/{tid}/schedstat").read().split())
                threads[tid] = (f"{process}:{name.rstrip('0123456789-')}", ran, waited, wakes)
        except OSError:
            continue  # the process or thread ended meanwhile
    return threads


span = float(sys.argv[1]) if len(sys.argv) > 1 else 6.0
before = sample()
time.sleep(span)
after = sample()
totals = collections.defaultdict(lambda: [0, 0, 0])
for tid, (kind, ran, waited, wakes) in after.items():
    if tid in before:
        _, ran0, waited0, wakes0 = before[tid]
        total = totals[kind]
        total[0] += ran - ran0
        total[1] += waited - waited0
        total[2] += wakes - wakes0
print(f"over {span} s: thread kind, ran, waited for a core, wake-ups, wait per wake-up")
for kind, (ran, waited, wakes) in sorted(totals.items(), key=lambda item: -item[1][0]):
    if ran:
        print(f"{kind:24s} {ran / 1e9:6.2f} s {waited / 1e9:6.2f} s {wakes:8d} {waited / max(wakes, 1) / 1e3:7.1f} us")
