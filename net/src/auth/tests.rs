//! Tests of datagram authentication: sealing and opening, stamping, the boot handshake,
//! replays to another node or boot, and the counters.

use super::*;

const NOW: u64 = 1_700_000_000_000_000;

fn key(s: &str) -> DatagramKey {
    DatagramKey::new(&ClusterSecret::new(s))
}

fn header(sender: u64, receiver: u64, stamp: u64) -> DatagramHeader {
    DatagramHeader {
        kind: DatagramKind::Data,
        sender,
        receiver,
        stamp,
    }
}

#[test]
fn round_trip_and_max_size() {
    let mut out = Vec::new();
    let payload = vec![7u8; MAX_PAYLOAD];
    let h = header(3, 5, 42);
    seal(&key("s"), &h, &payload, &mut out).expect("fits");
    assert_eq!(out.len(), MAX_DATAGRAM);
    let opened = open(&key("s"), &out).expect("valid");
    assert_eq!((opened.header, opened.payload), (h, &payload[..]));
    let too_big = vec![0u8; MAX_PAYLOAD + 1];
    assert!(matches!(
        seal(&key("s"), &h, &too_big, &mut out),
        Err(AuthError::Oversized { .. })
    ));
}

#[test]
fn wrong_key_tampered_truncated_and_old_format_are_refused() {
    let mut out = Vec::new();
    seal(&key("s"), &header(3, 5, 1), b"hello", &mut out).expect("fits");
    assert_eq!(open(&key("other"), &out), Err(AuthError::BadMac));
    for i in 0..out.len() {
        let mut bad = out.clone();
        bad[i] ^= 0x01;
        assert!(open(&key("s"), &bad).is_err(), "flip at {i}");
    }
    for n in 0..out.len() {
        assert!(open(&key("s"), &out[..n]).is_err(), "truncated to {n}");
    }
    // Version 1 (no receiver field), even with a valid MAC over its bytes.
    let mut v1 = vec![1u8];
    v1.extend_from_slice(&out[1..out.len() - TAG_LEN]);
    let mut mac = key("s").0;
    mac.update(&v1);
    v1.extend_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
    assert_eq!(open(&key("s"), &v1), Err(AuthError::BadVersion(1)));
}

#[test]
fn stamper_is_strictly_increasing() {
    let mut s = Stamper::default();
    assert_eq!(s.next(10), 10);
    assert_eq!(s.next(10), 11);
    assert_eq!(s.next(5), 12);
    assert_eq!(s.next(100), 100);
}

/// A node of the tests: a guard at an address.
struct Node {
    auth: DatagramAuth,
    addr: SocketAddr,
}

fn node(boot: u64, port: u16) -> Node {
    let secret = ClusterSecret::new("s");
    Node {
        auth: DatagramAuth::with_window(&secret, boot, ReplayWindow::default()),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn sealed(from: &Node, to: &Node, payload: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    from.auth
        .seal(NOW, to.addr, payload, &mut wire)
        .expect("fits");
    wire
}

/// Delivers what `from`'s handshake wants sent to whichever of `nodes` is at its
/// address, until nothing is left; returns the payloads delivered to the protocol.
fn pump(nodes: &[&Node]) -> Vec<(u64, Vec<u8>)> {
    let mut delivered = Vec::new();
    loop {
        let mut moved = false;
        for from in nodes {
            while let Some((to, wire)) = from.auth.poll_transmit() {
                moved = true;
                let Some(to) = nodes.iter().find(|n| n.addr == to) else {
                    continue;
                };
                if let Ok(Some(p)) = to.auth.open(NOW, from.addr, &wire) {
                    delivered.push((to.auth.boot(), p.to_vec()));
                }
            }
        }
        if !moved {
            return delivered;
        }
    }
}

/// `a` and `b` learn each other's boot: a first contact each way.
fn introduce(a: &Node, b: &Node) {
    let wire = sealed(a, b, b"hi");
    assert_eq!(b.auth.open(NOW, a.addr, &wire), Ok(None), "first contact");
    assert_eq!(pump(&[a, b]), vec![(b.boot(), b"hi".to_vec())]);
    let wire = sealed(b, a, b"hi back");
    assert_eq!(a.auth.open(NOW, b.addr, &wire), Ok(Some(&b"hi back"[..])));
}

impl Node {
    fn boot(&self) -> u64 {
        self.auth.boot()
    }
}

#[test]
fn first_contact_is_delivered_once_after_one_round_trip() {
    let (a, b) = (node(1, 1), node(2, 2));
    let wire = sealed(&a, &b, b"join");
    assert_eq!(b.auth.open(NOW, a.addr, &wire), Ok(None));
    assert_eq!(pump(&[&a, &b]), vec![(2, b"join".to_vec())]);
    // The first contact again (a replay) is refused and not re-sent a second time.
    assert_eq!(b.auth.open(NOW, a.addr, &wire), Err(AuthError::Replayed));
    assert_eq!(pump(&[&a, &b]), vec![]);
    // From now on both directions are delivered at once, nothing else on the wire.
    for i in 0..100u32 {
        let there = sealed(&a, &b, &i.to_be_bytes());
        assert_eq!(
            b.auth.open(NOW, a.addr, &there),
            Ok(Some(&i.to_be_bytes()[..]))
        );
        let back = sealed(&b, &a, &i.to_le_bytes());
        assert_eq!(
            a.auth.open(NOW, b.addr, &back),
            Ok(Some(&i.to_le_bytes()[..]))
        );
    }
    assert_eq!(
        (a.auth.poll_transmit(), b.auth.poll_transmit()),
        (None, None)
    );
    let (ca, cb) = (a.auth.counts(), b.auth.counts());
    assert_eq!(
        (ca.accepted, ca.handshakes, ca.rejected()),
        (100, 1, 0),
        "{ca:?}"
    );
    assert_eq!(
        (cb.accepted, cb.handshakes, cb.rejected()),
        (101, 1, 1),
        "{cb:?}"
    );
}

#[test]
fn replay_to_a_third_node_is_refused() {
    let (a, b, c) = (node(1, 1), node(2, 2), node(3, 3));
    introduce(&a, &b);
    introduce(&a, &c);
    let wire = sealed(&a, &b, b"for b only");
    assert_eq!(
        b.auth.open(NOW, a.addr, &wire),
        Ok(Some(&b"for b only"[..]))
    );
    assert_eq!(
        c.auth.open(NOW, a.addr, &wire),
        Err(AuthError::Misaddressed)
    );
    // c's hello reaches a, which re-sends nothing: the payload was b's.
    assert_eq!(pump(&[&a, &b, &c]), vec![]);
    assert_eq!(c.auth.counts().misaddressed, 1);
    assert_eq!(c.auth.counts().accepted, 1, "only the introduction");
    // Normal traffic to c still flows.
    let wire = sealed(&a, &c, b"for c");
    assert_eq!(c.auth.open(NOW, a.addr, &wire), Ok(Some(&b"for c"[..])));
    // a forgot b's boot on c's hello: its next datagram to b is a first contact,
    // answered by b, so a replay cannot cut a off from b.
    let wire = sealed(&a, &b, b"still for b");
    assert_eq!(b.auth.open(NOW, a.addr, &wire), Ok(None));
    assert_eq!(pump(&[&a, &b, &c]), vec![(2, b"still for b".to_vec())]);
    let wire = sealed(&a, &b, b"and again");
    assert_eq!(b.auth.open(NOW, a.addr, &wire), Ok(Some(&b"and again"[..])));
}

#[test]
fn a_first_contact_replayed_to_a_third_node_is_never_delivered_there() {
    let (a, b, c) = (node(1, 1), node(2, 2), node(3, 3));
    let wire = sealed(&a, &b, b"join");
    assert_eq!(b.auth.open(NOW, a.addr, &wire), Ok(None));
    assert_eq!(c.auth.open(NOW, a.addr, &wire), Ok(None));
    let delivered = pump(&[&a, &b, &c]);
    assert_eq!(delivered, vec![(2, b"join".to_vec())]);
    assert_eq!(c.auth.counts().accepted, 0);
}

#[test]
fn replay_to_a_restarted_receiver_is_refused() {
    let (a, b) = (node(1, 1), node(2, 2));
    introduce(&a, &b);
    let wire = sealed(&a, &b, b"before the restart");
    assert_eq!(
        b.auth.open(NOW, a.addr, &wire),
        Ok(Some(&b"before the restart"[..]))
    );
    // b restarts at the same address: a new boot id, an empty replay window.
    let b = node(22, 2);
    assert_eq!(
        b.auth.open(NOW, a.addr, &wire),
        Err(AuthError::Misaddressed)
    );
    // Its hello (from b's address) teaches a the new boot; the old payload is not
    // re-sent.
    assert_eq!(pump(&[&a, &b]), vec![]);
    assert_eq!(b.auth.counts().accepted, 0);
    // Normal traffic reaches the new boot.
    let wire = sealed(&a, &b, b"after");
    assert_eq!(b.auth.open(NOW, a.addr, &wire), Ok(Some(&b"after"[..])));
}

#[test]
fn a_restarted_peer_answering_from_another_address_is_learned_again() {
    // b is reached at `b.addr`, but its datagrams come from `alias` (NAT, several
    // interfaces), so a cannot learn b's boot from their source address.
    let (a, b) = (node(1, 1), node(2, 2));
    introduce(&a, &b);
    let b = node(22, 2);
    let alias = SocketAddr::from(([127, 0, 0, 1], 20));
    let wire = sealed(&a, &b, b"lost");
    assert_eq!(
        b.auth.open(NOW, a.addr, &wire),
        Err(AuthError::Misaddressed)
    );
    let (to, hello) = b.auth.poll_transmit().expect("a hello");
    assert_eq!(to, a.addr);
    assert_eq!(a.auth.open(NOW, alias, &hello), Ok(None));
    assert_eq!(
        a.auth.poll_transmit(),
        None,
        "a payload b's last boot had is not re-sent"
    );
    // a forgot the old boot: its next datagram is a first contact, delivered after
    // b's hello.
    let wire = sealed(&a, &b, b"first contact again");
    assert_eq!(b.auth.open(NOW, a.addr, &wire), Ok(None));
    let (_, hello) = b.auth.poll_transmit().expect("a hello");
    assert_eq!(a.auth.open(NOW, alias, &hello), Ok(None));
    let (to, resent) = a.auth.poll_transmit().expect("the first contact, re-sent");
    assert_eq!(to, b.addr);
    assert_eq!(
        b.auth.open(NOW, a.addr, &resent),
        Ok(Some(&b"first contact again"[..]))
    );
    let wire = sealed(&a, &b, b"then at once");
    assert_eq!(
        b.auth.open(NOW, a.addr, &wire),
        Ok(Some(&b"then at once"[..]))
    );
}

#[test]
fn replays_and_forged_hellos_are_refused() {
    let (a, b) = (node(1, 1), node(2, 2));
    introduce(&a, &b);
    let wire = sealed(&a, &b, b"x");
    assert_eq!(b.auth.open(NOW, a.addr, &wire), Ok(Some(&b"x"[..])));
    assert_eq!(b.auth.open(NOW, a.addr, &wire), Err(AuthError::Replayed));
    // A hello sealed with another secret teaches nothing.
    let mut forged = Vec::new();
    let h = DatagramHeader {
        kind: DatagramKind::Hello,
        ..header(9, a.boot(), NOW)
    };
    seal(&key("other"), &h, &0u64.to_be_bytes(), &mut forged).expect("fits");
    assert_eq!(a.auth.open(NOW, b.addr, &forged), Err(AuthError::BadMac));
    let wire = sealed(&a, &b, b"y");
    assert_eq!(b.auth.open(NOW, a.addr, &wire), Ok(Some(&b"y"[..])));
}

#[test]
fn a_digest_depends_on_the_secret_the_label_and_the_message() {
    let secret = ClusterSecret::new("s");
    let digest = secret.digest(b"label", b"message");
    assert_eq!(digest, ClusterSecret::new("s").digest(b"label", b"message"));
    assert_ne!(digest, ClusterSecret::new("t").digest(b"label", b"message"));
    assert_ne!(digest, secret.digest(b"label2", b"message"));
    assert_ne!(digest, secret.digest(b"label", b"message2"));
    // Not the datagram key's MAC of the message: the label keeps purposes apart.
    assert_ne!(digest, secret.digest(b"kvs datagram auth v1", b"message"));
}
