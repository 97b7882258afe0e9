//! A heal ends clogs: what a clog held arrives at the heal, not at the clog's end, in
//! the model engine (datagrams) and on the simulated transports of the full engine
//! (datagrams and stream frames), and what is sent after the heal is not held either.
//! (Found by an audit of kvs-sim: held datagrams arrived at the clog's planned end, after
//! newer ones.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvs_net::{BiStream, Clock, Connection, Datagrams, StreamTransport};
use kvs_scenarios::simnet::SimNet;
use kvs_scenarios::{Network, RunOptions, Scenario, node_addr, run_scenario};

const CLOG_AND_HEAL: &str = "
name: clog-heal
engine: model
duration: 20s
cluster: {nodes: 2, protocol: ping_pong, config: {interval: 100ms}}
network: {default: {latency: {min: 1ms, mean: 2ms, max: 5ms}}}
timeline:
  - {at: 5s, clog: {from: [n1], to: [n2], for: 7s}}
  - {at: 7s, heal: all}
";

#[test]
fn a_heal_delivers_what_a_clog_held_in_the_model_engine() {
    let scenario: Scenario = serde_yaml::from_str(CLOG_AND_HEAL).expect("scenario");
    let mut trace = Vec::new();
    run_scenario(
        &scenario,
        RunOptions {
            seed: 1,
            trace: Some(&mut trace),
        },
    )
    .expect("runs");
    // The times (µs) of n1's datagrams reaching n2.
    let delivered: Vec<u64> = String::from_utf8(trace)
        .expect("utf-8")
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| e["ev"] == "deliver" && e["from"] == "n1" && e["to"] == "n2")
        .filter_map(|e| e["t_us"].as_u64())
        .collect();
    let at_heal = delivered.iter().filter(|&&t| t == 7_000_000).count();
    assert!(
        at_heal >= 10,
        "the held datagrams arrive at the heal: {at_heal}"
    );
    assert!(
        !delivered.iter().any(|&t| t > 5_010_000 && t < 7_000_000),
        "nothing passes the clog before the heal"
    );
    assert!(
        !delivered.contains(&12_000_000),
        "nothing waits for the clog's planned end"
    );
    assert!(
        delivered.windows(2).all(|pair| pair[0] <= pair[1]),
        "in time order"
    );
}

#[test]
fn a_heal_delivers_what_a_clog_held_on_the_simulated_transports() {
    let mut net = SimNet::new(2, &Network::default(), 5).expect("net");
    let arrived = Arc::new(Mutex::new(Vec::new()));
    let (a, b) = (net.datagrams(0), net.datagrams(1));
    let (server, client) = (net.streams(1), net.streams(0));
    let (arrived2, clock) = (Arc::clone(&arrived), net.clock(1));
    net.spawn(async move {
        loop {
            let (_, payload) = b.recv_from().await.expect("recv");
            let what = format!("datagram {}", String::from_utf8_lossy(&payload));
            arrived2.lock().expect("log").push((what, clock.now()));
        }
    });
    let (arrived2, clock) = (Arc::clone(&arrived), net.clock(1));
    net.spawn(async move {
        let conn = server.accept().await.expect("accept");
        let mut s = conn.accept_stream().await.expect("stream");
        while let Some(frame) = s.recv_frame().await.expect("recv") {
            let what = format!("frame {}", String::from_utf8_lossy(&frame));
            arrived2.lock().expect("log").push((what, clock.now()));
        }
    });
    let clock = net.clock(0);
    net.spawn(async move {
        let conn = client.connect(node_addr(1)).await.expect("connect");
        let mut s = conn.open_stream().await.expect("open");
        s.send_frame(b"before").await.expect("send");
        // Clogged from 1 s to 2 s (the heal), planned until 11 s.
        clock.sleep(Duration::from_millis(1500)).await;
        s.send_frame(b"held").await.expect("send");
        a.send_to(node_addr(1), b"held").await.expect("send");
        clock.sleep(Duration::from_secs(1)).await;
        s.send_frame(b"after").await.expect("send");
        a.send_to(node_addr(1), b"after").await.expect("send");
        clock.sleep(Duration::from_secs(20)).await;
        drop(conn);
    });
    net.run_until(Duration::from_secs(1));
    net.clog(&[0], &[1], Duration::from_secs(10));
    net.run_until(Duration::from_secs(2));
    net.heal();
    net.run_until(Duration::from_secs(15));
    let arrived = arrived.lock().expect("log").clone();
    let when = |what: &str| {
        arrived
            .iter()
            .find(|(seen, _)| seen == what)
            .map(|(_, at)| *at)
            .unwrap_or_else(|| panic!("{what} never arrived: {arrived:?}"))
    };
    let heal = Duration::from_secs(2);
    for held in ["frame held", "datagram held"] {
        assert_eq!(when(held), heal, "{held}: {arrived:?}");
    }
    for after in ["frame after", "datagram after"] {
        let at = when(after);
        assert!(
            at > Duration::from_millis(2500) && at < Duration::from_secs(3),
            "{after} at {at:?}"
        );
    }
}
