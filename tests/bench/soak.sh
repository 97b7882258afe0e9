#!/usr/bin/env bash
# Soak (issue 11): three nodes on loopback under mixed load with random kills and restarts,
# ending in convergence with nothing lost. Minutes long; not run by CI.
#
# - Nodes n0, n1, n2 (auth off, audit trail on, sync_interval 1s) on free ports, joined
#   through n0, each in its own dir under a temp work dir (removed at the end unless
#   KVS_SOAK_KEEP=1).
# - Load: `kvs bench` against every node in a loop (8 connections, 80 % GETs, 2,000 keys
#   each), and 6 checked writers (2 per node, each always on its own node) that PUT and
#   DELETE 50 keys of their own and record every answer.
# - Faults: every 10-30 s one of n1, n2 (also n0 with KVS_SOAK_SPARE=none) is killed,
#   three times in four with SIGKILL, else stopped with SIGTERM, and restarted 1-5 s later.
#   n0 is spared by default, so that its memory and descriptors are those of one process
#   that lived through all of it.
# - Every 10 s: RSS (VmRSS) and open descriptors of each node's process, and its key count.
# - At the end: the load stops, every node is up, the three merkle roots must agree within
#   120 s, every checked key must hold on every node exactly its writer's last
#   acknowledged write (or the one in flight when its node died), and /audit/verify must
#   be ok on every node. Exit 0 when all of that holds, else 1.
#
# Needs: a release build (cargo build --release; KVS_BIN overrides the binary), python3.
#   usage: tests/bench/soak.sh [SECONDS]   (default 300)
#   env:   KVS_SOAK_SEED (random choices), KVS_SOAK_SPARE (n0, or none), KVS_SOAK_KEEP=1
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export KVS_BIN=${KVS_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/kvs}
export KVS_SOAK_SECONDS=${1:-300}
[ -x "$KVS_BIN" ] || { echo "no $KVS_BIN: run cargo build --release first" >&2; exit 2; }
exec python3 - <<'PY'
import json, os, random, shutil, signal, socket, subprocess, sys, tempfile, threading, time
import urllib.error, urllib.request

KVS = os.environ["KVS_BIN"]
SECONDS = float(os.environ["KVS_SOAK_SECONDS"])
SEED = int(os.environ.get("KVS_SOAK_SEED") or random.randrange(1 << 32))
SPARE = os.environ.get("KVS_SOAK_SPARE", "n0")
KEEP = os.environ.get("KVS_SOAK_KEEP") == "1"
rng = random.Random(SEED)
work = tempfile.mkdtemp(prefix="kvs-soak-")
print(f"soak: {SECONDS:.0f} s, seed {SEED}, work dir {work}, binary {KVS}", flush=True)


def free_port(kind):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=10):
    """(status, text), or (None, why) when no answer came."""
    data = None if body is None else body.encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except Exception as error:  # refused, reset, timeout: the node may be down
        return None, repr(error)


class Node:
    def __init__(self, name, seed_gossip):
        self.name = name
        self.http_port = free_port(socket.SOCK_STREAM)
        self.gossip_port = free_port(socket.SOCK_DGRAM)
        self.sync_port = free_port(socket.SOCK_DGRAM)
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        self.config = os.path.join(self.dir, "node.yaml")
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.gossip = f"127.0.0.1:{self.gossip_port}"
        seeds = f'["{seed_gossip}"]' if seed_gossip else "[]"
        with open(self.config, "w") as f:
            f.write(
                f"node_id: {name}\nhttp_port: {self.http_port}\ngossip_port: {self.gossip_port}\n"
                f"sync_port: {self.sync_port}\nseed_nodes: {seeds}\ncluster_secret: soak-secret\n"
                f"jwt_secret: soak-jwt-secret\nauth_enabled: false\nsync_interval: 1s\n"
            )
        os.chmod(self.config, 0o600)
        self.proc = None
        self.lives = 0
        self.up = threading.Event()

    def start(self):
        log = open(os.path.join(self.dir, "node.log"), "a")
        self.proc = subprocess.Popen([KVS, "run", self.config], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        self.lives += 1
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"{self.name} exited with {self.proc.returncode}; see {self.dir}/node.log")
            if http("GET", self.base + "/health", timeout=2)[0] == 200:
                self.up.set()
                return
            time.sleep(0.05)
        sys.exit(f"{self.name} did not answer /health within 60 s")

    def stop(self, sig):
        self.up.clear()
        self.proc.send_signal(sig)
        code = self.proc.wait()
        if sig == signal.SIGTERM and code != 0:
            print(f"soak: {self.name} exited with {code} after SIGTERM", flush=True)
            failures.append(f"{self.name}: exit {code} after SIGTERM")

    def sample(self):
        if self.proc is None or self.proc.poll() is not None:
            return None
        pid = self.proc.pid
        try:
            with open(f"/proc/{pid}/status") as f:
                rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, StopIteration):
            return None
        status, text = http("GET", self.base + "/sync", timeout=5)
        keys = json.loads(text)["keys"] if status == 200 else None
        return rss // 1024, fds, keys


failures = []
ok = False
statuses = {}
stop_load = threading.Event()
nodes = [Node("n0", None)]
nodes[0].start()
for i in (1, 2):
    nodes.append(Node(f"n{i}", nodes[0].gossip))
    nodes[-1].start()


def bench_loop(node):
    """kvs bench on `node` again and again while the soak runs (it fails while the node
    is down; the next run starts once it is back)."""
    runs = 0
    while not stop_load.is_set():
        node.up.wait(timeout=1)
        if not node.up.is_set():
            continue
        subprocess.run([KVS, "bench", "--addr", node.base, "--connections", "8", "--keys", "2000",
                        "--get-ratio", "0.8", "--duration", "15s", "--prefix", f"bench/{node.name}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs += 1


class Writer:
    """PUTs and DELETEs 50 keys of its own on one node, one at a time, and keeps per key
    the last acknowledged result and what was in flight since."""

    def __init__(self, node, index):
        self.node, self.index = node, index
        self.rng = random.Random(rng.randrange(1 << 32))
        self.keys = [f"soak/{node.name}/w{index}/{k}" for k in range(50)]
        self.last = {}  # key -> ("put", value) or ("absent",)
        self.pending = {key: [] for key in self.keys}  # uncertain ops after the last answer
        self.acknowledged = self.uncertain = 0
        self.n = 0

    def run(self):
        while not stop_load.is_set():
            if not self.node.up.wait(timeout=1):
                continue
            key = self.rng.choice(self.keys)
            url = f"{self.node.base}/kv/{key}"
            if self.rng.random() < 0.25:
                status, text = http("DELETE", url)
                op = ("absent",)
                done = status in (204, 404)
            else:
                self.n += 1
                value = json.dumps({"w": f"{self.node.name}/{self.index}", "n": self.n,
                                    "pad": "v" * self.rng.randrange(0, 300)})
                status, text = http("PUT", url, value)
                op = ("put", json.loads(value))
                done = status in (200, 201)
            if done:
                self.last[key], self.pending[key] = op, []
                self.acknowledged += 1
            else:
                self.pending[key].append(op)
                self.uncertain += 1
                statuses[status] = statuses.get(status, 0) + 1
                if status is not None and status != 503:
                    failures.append(f"{key}: {status} {text[:200]}")
                time.sleep(0.05)

    def check(self, node):
        """Failures of `node` against what this writer was acknowledged."""
        wrong = []
        for key in self.keys:
            status, text = http("GET", f"{node.base}/kv/{key}")
            held = ("put", json.loads(text)["data"]) if status == 200 else ("absent",)
            if status not in (200, 404):
                wrong.append(f"{node.name} {key}: {status} {text[:200]}")
                continue
            allowed = [self.last.get(key, ("absent",))] + self.pending[key]
            if held not in allowed:
                wrong.append(f"{node.name} {key}: holds {held}, expected one of {allowed}")
        return wrong


def sampler(samples):
    started = time.time()
    while True:
        row = [round(time.time() - started)]
        for node in nodes:
            row.append(node.sample())
        samples.append(row)
        cells = "  ".join(
            f"{n.name} " + ("down" if s is None else f"{s[0]:4d} MB {s[1]:3d} fd {s[2]} keys")
            for n, s in zip(nodes, row[1:]))
        print(f"soak: t={row[0]:4d} s  {cells}", flush=True)
        if stop_load.wait(timeout=10):
            return


writers = [Writer(node, i) for node in nodes for i in range(2)]
threads = [threading.Thread(target=bench_loop, args=(n,), daemon=True) for n in nodes]
threads += [threading.Thread(target=w.run, daemon=True) for w in writers]
samples = []
sampling = threading.Thread(target=sampler, args=(samples,), daemon=True)
for t in threads + [sampling]:
    t.start()

kills = {"SIGKILL": 0, "SIGTERM": 0}
victims = [n for n in nodes if SPARE == "none" or n.name != SPARE]
began = time.time()
try:
    while time.time() - began < SECONDS:
        time.sleep(min(rng.uniform(10, 30), max(0, SECONDS - (time.time() - began))))
        if time.time() - began >= SECONDS:
            break
        victim = rng.choice(victims)
        sig = signal.SIGKILL if rng.random() < 0.75 else signal.SIGTERM
        victim.stop(sig)
        kills[sig.name] += 1
        down = rng.uniform(1, 5)
        print(f"soak: t={time.time() - began:4.0f} s  {sig.name} {victim.name}, back in {down:.1f} s",
              flush=True)
        time.sleep(down)
        victim.start()

    stop_load.set()
    for t in threads:
        t.join(timeout=30)
    sampling.join()
    converge_began = time.time()
    roots = None
    while time.time() - converge_began < 120:
        answers = [http("GET", n.base + "/sync") for n in nodes]
        roots = [json.loads(text)["merkle_root"] if status == 200 else None
                 for status, text in answers]
        if len(set(roots)) == 1:
            break
        time.sleep(0.5)
    converged = roots is not None and None not in roots and len(set(roots)) == 1
    took = time.time() - converge_began
    lost = []
    for node in nodes:
        for writer in writers:
            lost += writer.check(node)
        verdict = json.loads(http("GET", node.base + "/audit/verify", timeout=120)[1])
        if verdict.get("ok") is not True:
            failures.append(f"{node.name}: /audit/verify {verdict}")
    checked = sum(len(w.keys) for w in writers) * len(nodes)

    print("\nsoak: per node, first and last sample (RSS MB, open fds, keys), peak RSS and fds")
    for i, node in enumerate(nodes):
        mine = [row[i + 1] for row in samples if row[i + 1] is not None]
        first, last = mine[0], mine[-1]
        print(f"  {node.name}: start {first[0]} MB {first[1]} fds, end {last[0]} MB {last[1]} fds "
              f"{last[2]} keys, peak {max(s[0] for s in mine)} MB {max(s[1] for s in mine)} fds, "
              f"{node.lives} lives")
    print(f"soak: {SECONDS:.0f} s, seed {SEED}; kills: {kills['SIGKILL']} SIGKILL, "
          f"{kills['SIGTERM']} SIGTERM; checked writes: "
          f"{sum(w.acknowledged for w in writers)} acknowledged, "
          f"{sum(w.uncertain for w in writers)} unanswered {statuses}")
    print(f"soak: converged: {'yes' if converged else 'no'} ({took:.1f} s after the load stopped; "
          f"roots {roots}); keys checked: {checked} ({len(lost)} wrong)")
    for line in (lost + failures)[:30]:
        print(f"  {line}")
    ok = converged and not lost and not failures
    print(f"soak: {'PASS' if ok else 'FAIL'}")
finally:
    stop_load.set()
    for node in nodes:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
            try:
                node.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node.proc.kill()
    if KEEP:
        print(f"soak: kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
sys.exit(0 if ok else 1)
PY
