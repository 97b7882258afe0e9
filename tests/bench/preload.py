"""Preloads the same key space into kvs and etcd for compare-etcd.sh (8 threads each)."""
import base64, http.client, json, sys, threading

kvs_port, etcd_port, keys = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
value = '"' + "x" * 254 + '"'
b64 = lambda s: base64.b64encode(s.encode()).decode()

def load(worker, workers):
    kvs = http.client.HTTPConnection("127.0.0.1", kvs_port)
    etcd = http.client.HTTPConnection("127.0.0.1", etcd_port)
    for i in range(worker, keys, workers):
        kvs.request("PUT", f"/kv/bench/{i}", value, {"Content-Type": "application/json"})
        assert kvs.getresponse().read() and True
        body = json.dumps({"key": b64(f"bench/{i}"), "value": b64(value)})
        etcd.request("POST", "/v3/kv/put", body)
        etcd.getresponse().read()

threads = [threading.Thread(target=load, args=(w, 8)) for w in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(f"preloaded {keys} keys into kvs and etcd")
