"""Writes the wrk Lua scripts for compare-etcd.sh: random keys of a preloaded key space,
256-byte JSON values (kvs) and the same bytes base64-encoded (etcd's JSON gateway), and a
fixed GET for nginx. Each script ends by printing one line of latency percentiles."""
import base64, sys

work, keys = sys.argv[1], int(sys.argv[2])
value = '"' + "x" * 254 + '"'
b64 = lambda s: base64.b64encode(s.encode()).decode()
etcd_keys = ",".join('"%s"' % b64("bench/%d" % i) for i in range(keys))
common = "math.randomseed(os.time() + math.floor(os.clock() * 1000000))\n" + (
    "done = function(summary, latency, requests)\n"
    '  io.write(string.format("latency-ms p50 %.2f p99 %.2f p99.9 %.2f max %.2f requests %d errors %d\\n",\n'
    "    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,\n"
    "    latency.max / 1000, summary.requests, summary.errors.status + summary.errors.connect\n"
    "      + summary.errors.read + summary.errors.write + summary.errors.timeout))\n"
    "end\n"
)
scripts = {
    "kvs-get.lua": common + 'request = function() return wrk.format("GET", "/kv/bench/" .. math.random(0, %d)) end\n' % (keys - 1),
    "kvs-put.lua": common + 'wrk.headers["Content-Type"] = "application/json"\n'
    'request = function() return wrk.format("PUT", "/kv/bench/" .. math.random(0, %d), nil, %r) end\n' % (keys - 1, value),
    "etcd-get.lua": common + "keys = {%s}\n" % etcd_keys
    + 'request = function() return wrk.format("POST", "/v3/kv/range", nil, \'{"key":"\' .. keys[math.random(1, #keys)] .. \'"}\') end\n',
    "etcd-put.lua": common + "keys = {%s}\n" % etcd_keys
    + 'request = function() return wrk.format("POST", "/v3/kv/put", nil, \'{"key":"\' .. keys[math.random(1, #keys)] .. \'","value":"%s"}\') end\n' % b64(value),
}
scripts["nginx-get.lua"] = common + 'request = function() return wrk.format("GET", "/") end\n'
for name, text in scripts.items():
    with open(f"{work}/{name}", "w") as f:
        f.write(text)
