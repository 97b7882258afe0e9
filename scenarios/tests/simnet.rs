//! The simulated transports: async code written against the `kvs_net` traits runs on
//! virtual time, deterministically, through the simulated fabric.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvs_net::{BiStream, Clock, Connection, Datagrams, NetError, StreamTransport};
use kvs_scenarios::simnet::SimNet;
use kvs_scenarios::{LinkPatch, Network, node_addr};

fn lossy(loss: f64) -> Network {
    Network {
        default: LinkPatch {
            loss: Some(loss),
            ..LinkPatch::default()
        },
        links: Vec::new(),
    }
}

/// Node 0 pings node 1 every 100 ms for 10 s; node 1 echoes. Returns the log of pongs.
fn ping_pong_log(seed: u64) -> Vec<String> {
    let mut net = SimNet::new(2, &lossy(0.2), seed).expect("net");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (a, b, clock) = (net.datagrams(0), net.datagrams(1), net.clock(0));
    net.spawn(async move {
        loop {
            let (from, payload) = b.recv_from().await.expect("recv");
            b.send_to(from, &payload).await.expect("send");
        }
    });
    let a2 = a.clone();
    let (log2, clock2) = (Arc::clone(&log), clock.clone());
    net.spawn(async move {
        loop {
            let (_, payload) = a2.recv_from().await.expect("recv");
            let at = clock2.now().as_micros();
            log2.lock()
                .expect("log")
                .push(format!("{at} {}", String::from_utf8_lossy(&payload)));
        }
    });
    net.spawn(async move {
        for i in 0..100 {
            a.send_to(node_addr(1), format!("ping {i}").as_bytes())
                .await
                .expect("send");
            clock.sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eq!(
        net.run_until(Duration::from_secs(10)),
        Duration::from_secs(10)
    );
    log.lock().expect("log").clone()
}

#[test]
fn datagrams_are_lossy_deterministic_and_seed_dependent() {
    let first = ping_pong_log(1);
    assert_eq!(first, ping_pong_log(1));
    assert_ne!(first, ping_pong_log(2));
    // 20 % loss each way: about 64 of 100 round trips survive.
    assert!((45..85).contains(&first.len()), "{} pongs", first.len());
}

#[test]
fn streams_carry_ordered_frames_and_end() {
    let mut net = SimNet::new(2, &Network::default(), 3).expect("net");
    let (client, server) = (net.streams(0), net.streams(1));
    let got = Arc::new(Mutex::new(Vec::new()));
    net.spawn(async move {
        let conn = server.accept().await.expect("accept");
        let mut s = conn.accept_stream().await.expect("stream");
        while let Some(frame) = s.recv_frame().await.expect("recv") {
            s.send_frame(&frame).await.expect("echo");
        }
        s.finish().expect("finish");
    });
    let got2 = Arc::clone(&got);
    net.spawn(async move {
        let conn = client.connect(node_addr(1)).await.expect("connect");
        assert_eq!(conn.remote_addr(), node_addr(1));
        let mut s = conn.open_stream().await.expect("open");
        for i in 0..50u32 {
            s.send_frame(&i.to_be_bytes()).await.expect("send");
        }
        s.finish().expect("finish");
        while let Some(f) = s.recv_frame().await.expect("recv") {
            got2.lock().expect("got").push(f);
        }
        assert_eq!(s.recv_frame().await.expect("after end"), None);
    });
    net.run_until(Duration::from_secs(5));
    let got = got.lock().expect("got").clone();
    let expected: Vec<Vec<u8>> = (0..50u32).map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(got, expected);
    assert_eq!(net.live_tasks(), 0);
}

/// A frame over the transports' limit is refused by its sender, as QUIC refuses it (so
/// that a simulated node meets the limit a real one does), and the stream goes on.
#[test]
fn a_frame_past_the_limit_is_refused_as_quic_refuses_it() {
    let mut net = SimNet::new(2, &Network::default(), 3).expect("net");
    let (client, server) = (net.streams(0), net.streams(1));
    let got = Arc::new(Mutex::new(Vec::new()));
    let got2 = Arc::clone(&got);
    net.spawn(async move {
        let conn = server.accept().await.expect("accept");
        let mut s = conn.accept_stream().await.expect("stream");
        while let Some(frame) = s.recv_frame().await.expect("recv") {
            got2.lock().expect("got").push(frame.len());
        }
    });
    net.spawn(async move {
        let conn = client.connect(node_addr(1)).await.expect("connect");
        let mut s = conn.open_stream().await.expect("open");
        let refused = s.send_frame(&vec![0; kvs_net::MAX_FRAME + 1]).await;
        assert!(
            matches!(refused, Err(NetError::TooLarge { len, max })
                if len == kvs_net::MAX_FRAME + 1 && max == kvs_net::MAX_FRAME),
            "{refused:?}"
        );
        s.send_frame(&vec![0; kvs_net::MAX_FRAME])
            .await
            .expect("the largest");
        s.finish().expect("finish");
    });
    net.run_until(Duration::from_secs(30));
    assert_eq!(*got.lock().expect("got"), vec![kvs_net::MAX_FRAME]);
}

#[test]
fn partitions_stall_streams_and_refuse_connections() {
    let mut net = SimNet::new(3, &Network::default(), 4).expect("net");
    net.partition(&[&[0], &[1, 2]]);
    let refused = Arc::new(Mutex::new(None));
    let (c0, refused2) = (net.streams(0), Arc::clone(&refused));
    net.spawn(async move {
        let result = c0.connect(node_addr(2)).await.map(|_| ());
        *refused2.lock().expect("r") = Some(result);
    });
    net.run_until(Duration::from_secs(30));
    assert!(matches!(
        *refused.lock().expect("r"),
        Some(Err(NetError::TimedOut))
    ));
    // A frame sent into a partition arrives after the heal, in order.
    net.heal();
    let (c1, s2) = (net.streams(1), net.streams(2));
    let arrived = Arc::new(Mutex::new(Vec::new()));
    let arrived2 = Arc::clone(&arrived);
    let clock = net.clock(2);
    net.spawn(async move {
        let conn = s2.accept().await.expect("accept");
        let mut s = conn.accept_stream().await.expect("stream");
        while let Some(f) = s.recv_frame().await.expect("recv") {
            arrived2.lock().expect("a").push((f, clock.now()));
        }
    });
    let clock = net.clock(1);
    net.spawn(async move {
        let conn = c1.connect(node_addr(2)).await.expect("connect");
        let mut s = conn.open_stream().await.expect("open");
        s.send_frame(b"1").await.expect("send");
        clock.sleep(Duration::from_secs(2)).await;
        s.send_frame(b"2").await.expect("send");
        s.finish().expect("finish");
        clock.sleep(Duration::from_secs(5)).await;
        drop(conn);
    });
    net.run_until(Duration::from_secs(31));
    net.partition(&[&[1], &[2]]);
    net.run_until(Duration::from_secs(33));
    net.heal();
    net.run_until(Duration::from_secs(40));
    let arrived = arrived.lock().expect("a").clone();
    let frames: Vec<Vec<u8>> = arrived.iter().map(|(f, _)| f.clone()).collect();
    assert_eq!(frames, [b"1".to_vec(), b"2".to_vec()]);
    // "2" was sent at ~32 s into the partition of 31-33 s: it waited for the heal.
    assert!(arrived[0].1 < Duration::from_secs(31), "{arrived:?}");
    assert!(arrived[1].1 >= Duration::from_secs(33), "{arrived:?}");
}

#[test]
fn an_hour_of_virtual_time_takes_no_real_time() {
    let mut net = SimNet::new(1, &Network::default(), 5).expect("net");
    net.set_clock_offset(0, 5_000_000);
    let clock = net.clock(0);
    let before = clock.unix_micros();
    let done = Arc::new(Mutex::new(false));
    let done2 = Arc::clone(&done);
    net.spawn(async move {
        clock.sleep(Duration::from_secs(3600)).await;
        *done2.lock().expect("d") = true;
    });
    let started = std::time::Instant::now();
    net.run_until(Duration::from_secs(3601));
    assert!(*done.lock().expect("d"));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(net.clock(0).unix_micros() - before, 3_601_000_000);
}

/// As with tokio's timers, a sleep dropped before its time wakes nobody: a timeout whose
/// future won (every acknowledged push's) must not poll its task again seconds later,
/// which would also hide a task that waits for a wake-up nothing sends.
#[test]
fn a_dropped_sleep_wakes_nobody() {
    let mut net = SimNet::new(1, &Network::default(), 5).expect("net");
    let runtime = net.runtime(0);
    let polls = Arc::new(Mutex::new(0u32));
    let counted = Arc::clone(&polls);
    net.spawn(async move {
        let won = kvs_net::timeout(&runtime, Duration::from_secs(5), async {
            kvs_net::Runtime::sleep(&runtime, Duration::from_millis(1)).await;
        })
        .await;
        assert!(won.is_some(), "the short sleep wins");
        // Waits for ever, counting how often it is polled.
        std::future::poll_fn(|_| {
            *counted.lock().expect("polls") += 1;
            std::task::Poll::<()>::Pending
        })
        .await;
    });
    net.run_until(Duration::from_secs(10));
    assert_eq!(*polls.lock().expect("polls"), 1, "polled once, never woken");
}

#[test]
fn a_crash_drops_a_nodes_tasks_and_a_pause_holds_them() {
    use kvs_net::Runtime;
    let mut net = SimNet::new(2, &Network::default(), 5).expect("net");
    let ticks = Arc::new(Mutex::new([0u32; 2]));
    for node in 0..2 {
        let runtime = net.runtime(node);
        let ticks = Arc::clone(&ticks);
        let sleeper = runtime.clone();
        drop(runtime.spawn(Box::pin(async move {
            loop {
                sleeper.sleep(Duration::from_millis(100)).await;
                ticks.lock().expect("ticks")[node] += 1;
            }
        })));
    }
    net.run_until(Duration::from_secs(1));
    assert_eq!(*ticks.lock().expect("ticks"), [10, 10]);
    net.crash(0);
    net.pause(1, true);
    net.run_until(Duration::from_secs(2));
    assert_eq!(*ticks.lock().expect("ticks"), [10, 10], "nothing runs");
    net.pause(1, false);
    net.run_until(Duration::from_secs(3));
    let after = *ticks.lock().expect("ticks");
    assert_eq!(after[0], 10, "a crashed node's task is gone");
    // The timer that fell due while paused fires at the resume (2 s), then every 100 ms.
    assert_eq!(after[1], 21, "a resumed node's task goes on");
}

#[test]
fn a_connection_to_a_crashed_node_breaks_even_after_its_restart() {
    use kvs_net::Runtime;
    let mut net = SimNet::new(2, &Network::default(), 6).expect("net");
    let server = net.streams(1);
    let serving = net.runtime(1);
    drop(serving.spawn(Box::pin(async move {
        let conn = server.accept().await.expect("accept");
        let _stream = conn.accept_stream().await.expect("stream");
        std::future::pending::<()>().await;
    })));
    let (client, clock) = (net.streams(0), net.clock(0));
    let outcome = Arc::new(Mutex::new(None));
    let outcome2 = Arc::clone(&outcome);
    net.spawn(async move {
        let conn = client.connect(node_addr(1)).await.expect("connect");
        let mut s = conn.open_stream().await.expect("open");
        s.send_frame(b"hello").await.expect("send");
        clock.sleep(Duration::from_secs(2)).await;
        // The old process is gone, a new one runs on the same address.
        s.send_frame(b"anyone?").await.expect("send");
        let reply = s.recv_frame().await;
        *outcome2.lock().expect("o") = Some((reply.map_err(|e| e.to_string()), clock.now()));
    });
    net.run_until(Duration::from_secs(1));
    net.crash(1);
    net.set_up(1, true);
    let restarted = net.streams(1);
    let accepted = Arc::new(Mutex::new(0));
    let accepted2 = Arc::clone(&accepted);
    drop(net.runtime(1).spawn(Box::pin(async move {
        while restarted.accept().await.is_ok() {
            *accepted2.lock().expect("a") += 1;
        }
    })));
    net.run_until(Duration::from_secs(20));
    let outcome = outcome.lock().expect("o").clone();
    let (reply, at) = outcome.expect("the client's stream ended");
    assert!(reply.is_err(), "the stream broke: {reply:?}");
    // Broken as QUIC's idle timeout would: 10 s after the last thing the old process
    // sent (its stream's end as it crashed at 1 s), not at once and not never.
    assert!(at >= Duration::from_secs(11), "broke at {at:?}");
    assert_eq!(
        *accepted.lock().expect("a"),
        0,
        "the new life knows no old connection"
    );
}

/// Closing a connection fails its streams at once on both ends, as a closed QUIC
/// connection does, and no stream can be opened or accepted on it afterwards.
#[test]
fn closing_a_connection_breaks_its_streams_on_both_ends() {
    let mut net = SimNet::new(2, &Network::default(), 7).expect("net");
    let (client, server, clock) = (net.streams(0), net.streams(1), net.clock(0));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let server_side = Arc::clone(&outcomes);
    net.spawn(async move {
        let conn = server.accept().await.expect("accept");
        let mut s = conn.accept_stream().await.expect("stream");
        let first = s.recv_frame().await.expect("recv");
        assert_eq!(first.as_deref(), Some(&b"hello"[..]));
        let waiting = s.recv_frame().await.map_err(|e| e.to_string());
        let next = conn
            .accept_stream()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        server_side
            .lock()
            .expect("o")
            .push(format!("server: {waiting:?} then {next:?}"));
    });
    let client_side = Arc::clone(&outcomes);
    net.spawn(async move {
        let conn = client.connect(node_addr(1)).await.expect("connect");
        let mut s = conn.open_stream().await.expect("open");
        s.send_frame(b"hello").await.expect("send");
        clock.sleep(Duration::from_secs(1)).await;
        let closed_at = clock.now();
        conn.close();
        let sent = s.send_frame(b"after").await.map_err(|e| e.to_string());
        let opened = conn
            .open_stream()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        let waited = clock.now() - closed_at;
        client_side
            .lock()
            .expect("o")
            .push(format!("client after {waited:?}: {sent:?} then {opened:?}"));
    });
    net.run_until(Duration::from_secs(3));
    let outcomes = outcomes.lock().expect("o").clone();
    assert_eq!(
        outcomes,
        [
            "client after 0ns: Err(\"closed\") then Err(\"closed\")",
            "server: Err(\"closed\") then Err(\"closed\")",
        ],
    );
    assert_eq!(net.live_tasks(), 0);
}
