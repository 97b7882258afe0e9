# Sourced by the bench scripts: `bench_config NAME HTTP GOSSIP SYNC DATA SEEDS` prints a node
# config for loopback benchmarks (auth, history and audit off, warnings only), with the
# cluster secret in $secret.
bench_config() {
  cat <<YAML
node_id: $1
http_port: $2
gossip_port: $3
sync_port: $4
data_dir: $5
seed_nodes: [$6]
cluster_secret: "$secret"
jwt_secret: "bench-jwt-secret-bench-jwt-secret"
auth_enabled: false
revision_history_enabled: false
tamper_logging_enabled: false
log_level: warn
YAML
}
