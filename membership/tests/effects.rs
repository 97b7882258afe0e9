//! Exact effects of single inputs on a pair of `Swim` nodes wired by hand (design.md
//! practice 2): which datagrams go where, which events come out, what is rejected.

use std::net::SocketAddr;
use std::time::Duration;

use kvs_membership::{
    LocalMember, MemberState, MembershipEvent, Swim, SwimConfig, SwimError, Transmit,
};
use kvs_net::NodeId;

fn local(name: &str, port: u16) -> LocalMember {
    LocalMember {
        id: NodeId::from(name),
        gossip_addr: SocketAddr::from(([127, 0, 0, 1], port)),
        meta: b"meta".to_vec(),
        incarnation: 0,
        joined_at: 1_000,
    }
}

fn drain(swim: &mut Swim) -> Vec<Transmit> {
    std::iter::from_fn(|| swim.poll_transmit()).collect()
}

fn events(swim: &mut Swim) -> Vec<MembershipEvent> {
    std::iter::from_fn(|| swim.poll_event()).collect()
}

#[test]
fn join_is_one_push_pull_each_way() {
    let t = Duration::ZERO;
    let (la, lb) = (local("a", 1), local("b", 2));
    let mut a = Swim::new(la.clone(), SwimConfig::lan(), 1, t).unwrap();
    let mut b = Swim::new(lb.clone(), SwimConfig::lan(), 2, t).unwrap();
    a.join(&[lb.gossip_addr, la.gossip_addr], t);
    let out = drain(&mut a);
    assert_eq!(out.len(), 1, "own address is not a seed");
    assert_eq!(out[0].dst, lb.gossip_addr);

    b.handle_datagram(la.gossip_addr, &out[0].payload, t);
    let reply = drain(&mut b);
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0].dst, la.gossip_addr);
    match events(&mut b).as_slice() {
        [MembershipEvent::Alive(m)] => {
            assert_eq!(
                (m.id.as_str(), m.state, m.joined_at),
                ("a", MemberState::Alive, 1_000)
            );
        }
        other => panic!("unexpected events {other:?}"),
    }

    a.handle_datagram(lb.gossip_addr, &reply[0].payload, t);
    assert!(
        matches!(events(&mut a).as_slice(), [MembershipEvent::Alive(m)] if m.id.as_str() == "b")
    );
    assert_eq!(a.live_members(), 2);
    assert_eq!(a.metrics().push_pulls, 1);
    assert_eq!(
        b.metrics().push_pulls,
        0,
        "a reply is not an exchange of its own"
    );
}

#[test]
fn first_probe_pings_the_only_member() {
    let t = Duration::ZERO;
    let (la, lb) = (local("a", 1), local("b", 2));
    let mut a = Swim::new(la.clone(), SwimConfig::lan(), 1, t).unwrap();
    let mut b = Swim::new(lb.clone(), SwimConfig::lan(), 2, t).unwrap();
    a.join(&[lb.gossip_addr], t);
    let join = drain(&mut a).remove(0);
    b.handle_datagram(la.gossip_addr, &join.payload, t);
    let reply = drain(&mut b).remove(0);
    a.handle_datagram(lb.gossip_addr, &reply.payload, t);
    drain(&mut a);

    let mut now = t;
    while a.metrics().probes == 0 {
        now = a.poll_timeout().expect("timers run");
        a.handle_timeout(now);
    }
    // The ping, and whatever gossip round fell due meanwhile.
    let to_b: Vec<Transmit> = drain(&mut a)
        .into_iter()
        .filter(|x| x.dst == lb.gossip_addr)
        .collect();
    assert!(!to_b.is_empty());
    let later = now + Duration::from_millis(1);
    for datagram in &to_b {
        b.handle_datagram(la.gossip_addr, &datagram.payload, later);
    }
    let acks = drain(&mut b);
    assert_eq!(acks.len(), 1, "b answers the ping alone: {acks:?}");
    a.handle_datagram(lb.gossip_addr, &acks[0].payload, later);
    assert_eq!(a.metrics().acks, 1);
    let rtt = a.member(&NodeId::from("b")).unwrap().rtt;
    assert_eq!(rtt, Some(Duration::from_millis(1)));
}

#[test]
fn oversized_identity_and_bad_config_are_rejected() {
    let mut big = local("a", 1);
    big.id = NodeId::new("x".repeat(129));
    let err = Swim::new(big, SwimConfig::lan(), 1, Duration::ZERO).unwrap_err();
    assert_eq!(err, SwimError::IdentityTooLarge);
    let cfg = SwimConfig {
        max_payload: 600,
        ..SwimConfig::lan()
    };
    assert!(matches!(
        Swim::new(local("a", 1), cfg, 1, Duration::ZERO),
        Err(SwimError::Config(_))
    ));
}

#[test]
fn a_lone_node_that_leaves_goes_quiet() {
    let mut a = Swim::new(local("a", 1), SwimConfig::lan(), 1, Duration::ZERO).unwrap();
    assert!(a.poll_timeout().is_some());
    a.leave(Duration::from_secs(1));
    for _ in 0..10 {
        let Some(at) = a.poll_timeout() else { break };
        assert!(at <= Duration::from_secs(2), "still busy at {at:?}");
        a.handle_timeout(at);
    }
    assert_eq!(a.poll_timeout(), None);
    assert_eq!(a.members()[0].state, MemberState::Left);
}

/// Runs `swim`'s timers one deadline at a time until `done` holds for the node and what
/// that step sent; returns the step's time and datagrams.
fn step_until(
    swim: &mut Swim,
    mut done: impl FnMut(&Swim, &[Transmit]) -> bool,
) -> (Duration, Vec<Transmit>) {
    loop {
        let at = swim.poll_timeout().expect("timers run");
        swim.handle_timeout(at);
        let sent = drain(swim);
        if done(swim, &sent) {
            return (at, sent);
        }
    }
}

/// Runs `swim`'s timers up to `until`, returning everything it sent meanwhile.
fn run_timers(swim: &mut Swim, until: Duration) -> Vec<Transmit> {
    let mut out = Vec::new();
    while let Some(at) = swim.poll_timeout().filter(|&at| at <= until) {
        swim.handle_timeout(at);
        out.extend(drain(swim));
    }
    out
}

/// Joins `joiner` through `seed` (one push-pull each way); the seed's later gossip is
/// not delivered anywhere.
fn join_through(joiner: &mut Swim, j: &LocalMember, seed: &mut Swim, s: &LocalMember) {
    let t = Duration::ZERO;
    joiner.join(&[s.gossip_addr], t);
    for x in drain(joiner) {
        seed.handle_datagram(j.gossip_addr, &x.payload, t);
    }
    for x in drain(seed) {
        joiner.handle_datagram(s.gossip_addr, &x.payload, t);
    }
    events(joiner);
    events(seed);
}

#[test]
fn a_datagram_from_an_unknown_member_teaches_it() {
    let t = Duration::ZERO;
    let (la, lb, lc) = (local("a", 1), local("b", 2), local("c", 3));
    let mut a = Swim::new(la.clone(), SwimConfig::lan(), 1, t).unwrap();
    let mut b = Swim::new(lb.clone(), SwimConfig::lan(), 2, t).unwrap();
    let mut c = Swim::new(lc.clone(), SwimConfig::lan(), 3, t).unwrap();
    join_through(&mut a, &la, &mut b, &lb);
    // c learns a from b's member list; b's broadcast of c never reaches a.
    join_through(&mut c, &lc, &mut b, &lb);
    assert!(a.member(&NodeId::from("c")).is_none());

    // The first thing c sends a (a probe or gossip) is all a hears of c.
    let to_a = |x: &Transmit| x.dst == la.gossip_addr;
    let (now, sent) = step_until(&mut c, |_, sent| sent.iter().any(to_a));
    let first = sent.into_iter().find(to_a).unwrap();
    let mut in_flight = vec![(lc.gossip_addr, la.gossip_addr, first.payload)];
    for _ in 0..4 {
        for (from, to, payload) in std::mem::take(&mut in_flight) {
            let (node, addr) = if to == la.gossip_addr {
                (&mut a, la.gossip_addr)
            } else {
                (&mut c, lc.gossip_addr)
            };
            node.handle_datagram(from, &payload, now);
            let sent = drain(node).into_iter().filter(|x| x.dst != lb.gossip_addr);
            in_flight.extend(sent.map(|x| (addr, x.dst, x.payload)));
        }
    }
    let seen = a.member(&NodeId::from("c")).map(|m| m.state);
    assert_eq!(seen, Some(MemberState::Alive), "a learned c from c itself");
    assert!(
        events(&mut a)
            .iter()
            .any(|e| matches!(e, MembershipEvent::Alive(m) if m.id.as_str() == "c"))
    );
}

#[test]
fn an_ack_to_a_suspect_carries_its_suspicion() {
    let t = Duration::ZERO;
    let (la, lb) = (local("a", 1), local("b", 2));
    let mut a = Swim::new(la.clone(), SwimConfig::lan(), 1, t).unwrap();
    let mut b = Swim::new(lb.clone(), SwimConfig::lan(), 2, t).unwrap();
    join_through(&mut a, &la, &mut b, &lb);

    // b's first probe of a is held back.
    let (_, sent) = step_until(&mut b, |b, _| b.metrics().probes == 1);
    let ping = sent.into_iter().find(|x| x.dst == la.gossip_addr).unwrap();
    // Everything a sends b is lost: a suspects b, and the suspicion's own broadcasts
    // (and the pings carrying it) all miss b.
    let id_b = NodeId::from("b");
    let suspected =
        |a: &Swim, _: &[Transmit]| a.member(&id_b).unwrap().state == MemberState::Suspect;
    let (at, _) = step_until(&mut a, suspected);
    let now = at + Duration::from_millis(500);
    run_timers(&mut a, now);
    assert_eq!(a.member(&id_b).unwrap().state, MemberState::Suspect);

    // b's ping arrives at last: the ack tells b it is suspected, and b refutes.
    a.handle_datagram(lb.gossip_addr, &ping.payload, now);
    let ack = drain(&mut a);
    assert_eq!(ack.len(), 1);
    b.handle_datagram(la.gossip_addr, &ack[0].payload, now);
    assert_eq!(b.incarnation(), 1, "b refuted the suspicion from the ack");
    assert_eq!(b.metrics().refutations, 1);
}

#[test]
fn an_accuser_in_poor_health_gives_its_suspect_longer() {
    let t = Duration::ZERO;
    let (la, lb) = (local("a", 1), local("b", 2));
    let cfg = SwimConfig::lan();
    let mut a = Swim::new(la.clone(), cfg.clone(), 1, t).unwrap();
    let mut b = Swim::new(lb.clone(), cfg.clone(), 2, t).unwrap();
    join_through(&mut a, &la, &mut b, &lb);

    // Nothing reaches a any more: its probes of b go unanswered, which raises its local
    // health score before it suspects b.
    let id_b = NodeId::from("b");
    let state_of_b = |a: &Swim| a.member(&id_b).unwrap().state;
    let (suspected_at, _) = step_until(&mut a, |a, _| state_of_b(a) == MemberState::Suspect);
    let score = a.metrics().health_score;
    assert!(score > 0, "unanswered probes raised a's health score");
    let (dead_at, _) = step_until(&mut a, |a, _| state_of_b(a) == MemberState::Dead);

    // Two members: no confirmations, so the timeout is the minimum, plus one probe period
    // per point of the accuser's score at the suspicion.
    let expected = cfg.suspicion_timeout_min + cfg.probe_interval * score;
    assert_eq!(dead_at - suspected_at, expected);
}

#[test]
fn a_refutation_goes_straight_to_the_first_accuser() {
    let t = Duration::ZERO;
    let (la, lb, lc) = (local("a", 1), local("b", 2), local("c", 3));
    let mut a = Swim::new(la.clone(), SwimConfig::lan(), 1, t).unwrap();
    let mut b = Swim::new(lb.clone(), SwimConfig::lan(), 2, t).unwrap();
    let mut c = Swim::new(lc.clone(), SwimConfig::lan(), 3, t).unwrap();
    join_through(&mut b, &lb, &mut a, &la);
    join_through(&mut c, &lc, &mut a, &la);
    join_through(&mut c, &lc, &mut b, &lb);
    let id_b = NodeId::from("b");

    // c hears nothing back and suspects b; the next datagram it sends a carries that.
    let (_, _) = step_until(&mut c, |c, _| {
        c.member(&id_b).unwrap().state == MemberState::Suspect
    });
    let (now, sent) = step_until(&mut c, |_, sent| {
        sent.iter().any(|x| x.dst == la.gossip_addr)
    });
    for x in sent.iter().filter(|x| x.dst == la.gossip_addr) {
        a.handle_datagram(lc.gossip_addr, &x.payload, now);
    }
    assert_eq!(a.member(&id_b).unwrap().state, MemberState::Suspect);
    drain(&mut a);

    // a passes the suspicion (naming c, its first accuser) to b; b refutes, and its
    // refutation leaves for c at once, not at b's next gossip round.
    let (now, sent) = step_until(&mut a, |_, sent| {
        sent.iter().any(|x| x.dst == lb.gossip_addr)
    });
    for x in sent.iter().filter(|x| x.dst == lb.gossip_addr) {
        b.handle_datagram(la.gossip_addr, &x.payload, now);
    }
    assert_eq!(b.incarnation(), 1, "b refuted");
    let to_c: Vec<Transmit> = drain(&mut b)
        .into_iter()
        .filter(|x| x.dst == lc.gossip_addr)
        .collect();
    assert_eq!(to_c.len(), 1, "one datagram to the accuser");
    c.handle_datagram(lb.gossip_addr, &to_c[0].payload, now);
    let seen = c.member(&id_b).unwrap();
    assert_eq!((seen.state, seen.incarnation), (MemberState::Alive, 1));
}

#[test]
fn a_claim_of_this_node_at_the_last_incarnation_is_refuted_without_overflow() {
    let t = Duration::ZERO;
    let la = local("a", 1);
    // Another member claims to be "a" at incarnation u64::MAX (a hostile peer that knows
    // the cluster secret): "a" refutes it, which overflowed `incarnation + 1`.
    let mut impostor = local("a", 9);
    impostor.incarnation = u64::MAX;
    let lb = local("b", 2);
    let mut a = Swim::new(la.clone(), SwimConfig::lan(), 1, t).unwrap();
    let mut claim = Swim::new(impostor.clone(), SwimConfig::lan(), 3, t).unwrap();
    let mut b = Swim::new(lb.clone(), SwimConfig::lan(), 2, t).unwrap();
    join_through(&mut claim, &impostor, &mut b, &lb);
    join_through(&mut a, &la, &mut b, &lb);
    let me = a.member(&NodeId::from("a")).expect("a knows itself");
    assert_eq!(me.incarnation, u64::MAX);
}

/// Runs `nodes` from `from` to `until` in steps of 10 ms, every datagram delivered at
/// once to the node at its address (none lost).
fn run_together(nodes: &mut [(&mut Swim, SocketAddr)], from: Duration, until: Duration) {
    let mut now = from;
    while now <= until {
        let mut in_flight: Vec<(SocketAddr, Transmit)> = Vec::new();
        for (node, addr) in nodes.iter_mut() {
            let sent = run_timers(node, now).into_iter().chain(drain(node));
            in_flight.extend(sent.map(|x| (*addr, x)));
        }
        while !in_flight.is_empty() {
            for (src, x) in std::mem::take(&mut in_flight) {
                if let Some((node, addr)) = nodes.iter_mut().find(|(_, addr)| *addr == x.dst) {
                    node.handle_datagram(src, &x.payload, now);
                    in_flight.extend(drain(node).into_iter().map(|x| (*addr, x)));
                }
            }
        }
        now += Duration::from_millis(10);
    }
}

/// Found by an audit with real processes: two nodes started with one `node_id` (a copied
/// config) refuted each other for ever (incarnation 1 to 76 in 15 s) and nothing said so.
/// Each now sees the other as a conflict, with its address; a node restarted on another
/// address, whose earlier life's entry it refutes once, does not.
#[test]
fn two_nodes_with_one_id_see_the_conflict_and_a_restart_elsewhere_does_not() {
    let t = Duration::ZERO;
    let (first, seed, second) = (local("a", 1), local("c", 2), local("a", 3));
    let mut a1 = Swim::new(first.clone(), SwimConfig::lan(), 1, t).unwrap();
    let mut c = Swim::new(seed.clone(), SwimConfig::lan(), 2, t).unwrap();
    let mut a2 = Swim::new(second.clone(), SwimConfig::lan(), 3, t).unwrap();
    a1.join(&[seed.gossip_addr], t);
    a2.join(&[seed.gossip_addr], t);
    run_together(
        &mut [
            (&mut a1, first.gossip_addr),
            (&mut c, seed.gossip_addr),
            (&mut a2, second.gossip_addr),
        ],
        t,
        Duration::from_secs(10),
    );
    assert!(a1.metrics().id_conflicts > 0, "{:?}", a1.metrics());
    assert!(a2.metrics().id_conflicts > 0, "{:?}", a2.metrics());
    assert_eq!(a1.id_conflict(), Some(second.gossip_addr));
    assert_eq!(a2.id_conflict(), Some(first.gossip_addr));

    // a restarted on another address (its first life gone): c still gossips the first
    // life's entry for a while, which a refutes, and that is no conflict.
    let t = Duration::from_secs(20);
    let mut c = Swim::new(seed.clone(), SwimConfig::lan(), 4, t).unwrap();
    let mut a1 = Swim::new(first.clone(), SwimConfig::lan(), 5, t).unwrap();
    a1.join(&[seed.gossip_addr], t);
    run_together(
        &mut [(&mut a1, first.gossip_addr), (&mut c, seed.gossip_addr)],
        t,
        t + Duration::from_secs(5),
    );
    let restarted = local("a", 3);
    let mut a2 = Swim::new(restarted.clone(), SwimConfig::lan(), 6, t).unwrap();
    a2.join(&[seed.gossip_addr], t + Duration::from_secs(5));
    run_together(
        &mut [(&mut a2, restarted.gossip_addr), (&mut c, seed.gossip_addr)],
        t + Duration::from_secs(5),
        t + Duration::from_secs(20),
    );
    assert!(a2.incarnation() > 0, "a2 refuted its earlier life's entry");
    assert_eq!(a2.metrics().id_conflicts, 0, "{:?}", a2.metrics());
    assert_eq!(a2.id_conflict(), None);
}
