//! The replication driver on the simulator, by hand: a peer whose sessions keep failing
//! (its sync traffic blocked while membership still sees it alive) does not take every
//! anti-entropy round from the other peers.

mod driver;

use std::sync::Arc;
use std::time::Duration;

use driver::{start, up, write};
use kvs_net::Clock;
use kvs_scenarios::Network;
use kvs_scenarios::simnet::{SimNet, SimStreams};
use kvs_sync::driver::Replication;
use kvs_sync::{MemoryStore, Store, StoreOptions};
use tokio::sync::watch;

/// Writes `key` on node `i`'s `store` and pushes it through `node`.
fn write_and_push(
    net: &SimNet,
    i: usize,
    node: &Replication<SimStreams>,
    store: &MemoryStore,
    key: &str,
) {
    let now_ms = net.clock(i).unix_micros() / 1000;
    let outcome = store.write_batch(&[write(key)], now_ms).expect("write");
    node.push(key, &outcome[0].as_ref().expect("accepted").version);
}

/// n1 and n3 cannot reach each other, and n2 cannot reach n3 (n3 still reaches n2);
/// n1 and n2 each write, their pushes to n3 fail, and n3 is behind in both views; then
/// n3 writes, and its push reaches n2 only. A peer behind was picked first for every
/// round, so n1 and n2 spent every round on n3 and never synced with each other: n1 never
/// had n3's write (a black-box audit waited 160 s). Now a peer behind whose last three
/// rounds failed is picked like any other.
#[test]
fn a_peer_whose_rounds_keep_failing_does_not_take_every_round() {
    let network: Network =
        serde_yaml::from_str("default: {latency: {min: 1ms, mean: 1ms, max: 1ms}}")
            .expect("network");
    let mut net = SimNet::new(3, &network, 11).expect("net");
    let (_stop, shutdown) = watch::channel(false);
    let stores: Vec<Arc<MemoryStore>> = (0..3)
        .map(|_| Arc::new(MemoryStore::new(StoreOptions::default())))
        .collect();
    let nodes: Vec<_> = (0..3)
        .map(|i| start(&net, i, &stores[i], &shutdown))
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        (0..3)
            .filter(|&peer| peer != i)
            .for_each(|peer| up(node, peer));
    }
    net.run_until(Duration::from_secs(3));

    net.block(&[0], &[2]);
    net.block(&[2], &[0]);
    net.block(&[1], &[2]);
    write_and_push(&net, 0, &nodes[0], &stores[0], "from-n1");
    write_and_push(&net, 1, &nodes[1], &stores[1], "from-n2");
    let n3_behind = |node: &Replication<SimStreams>| {
        let status = node.status().expect("status");
        status
            .peers
            .iter()
            .any(|peer| peer.node_id == "n3" && peer.behind)
    };
    let cut_at = net.now();
    while !(n3_behind(&nodes[0]) && n3_behind(&nodes[1])) {
        assert!(
            net.now() < cut_at + Duration::from_secs(60),
            "no push failed"
        );
        let next = net.now() + Duration::from_millis(100);
        net.run_until(next);
    }
    let has = |store: &MemoryStore, key: &str| store.get(key).expect("get").is_some();
    write_and_push(&net, 2, &nodes[2], &stores[2], "from-n3");
    let written_at = net.now();
    while !has(&stores[1], "from-n3") {
        assert!(
            net.now() < written_at + Duration::from_secs(1),
            "no push to n2"
        );
        let next = net.now() + Duration::from_millis(5);
        net.run_until(next);
    }
    while !has(&stores[0], "from-n3") {
        assert!(
            net.now() < written_at + Duration::from_secs(120),
            "n1 still lacks n3's write after 120 s: {:?}",
            nodes[0].status().expect("status")
        );
        let next = net.now() + Duration::from_millis(100);
        net.run_until(next);
    }
    assert!(has(&stores[1], "from-n1") && has(&stores[0], "from-n2"));
    eprintln!(
        "pushes to n3 failed {:?} after the cut; n1 had n3's write {:?} after it",
        written_at - cut_at,
        net.now() - written_at
    );
}
