//! Measures the SWIM core on the virtual-time harness of `tests/harness`, with the LAN
//! preset: crash-to-dead latency on every member (N=100, many seeds), false deaths at
//! 30 % loss, protocol periods for one join to reach 1,000 nodes, and bytes per node per
//! second in a steady cluster of 10, 100 and 1,000 nodes.
//!
//! `cargo run --release -p kvs-membership --example measure -- [all|crash|loss|slow|spread|bytes] [SEEDS]`

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{Seen, Sim, ms};
use kvs_membership::{MemberState, SwimConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn secs(v: u64) -> Duration {
    Duration::from_secs(v)
}

/// `n` nodes formed through node 0, the last `spare` of them left out.
fn formed(seed: u64, n: usize, spare: usize) -> Sim {
    let mut sim = Sim::new(seed, n, SwimConfig::lan());
    sim.form_first(n - spare, ms(5), secs(10));
    sim
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

fn crash_to_dead(seeds: u64) {
    let mut latencies = Vec::new();
    let mut undetected = 0;
    for seed in 1..=seeds {
        let mut sim = formed(seed, 100, 0);
        let victim = ChaCha8Rng::seed_from_u64(seed).gen_range(1..100);
        let t = sim.now;
        sim.crash(victim);
        sim.run_until(t + secs(15));
        match sim.last_to_see(victim, Seen::Dead, t) {
            Some(at) => latencies.push((at - t).as_secs_f64()),
            None => undetected += 1,
        }
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "crash->dead on every member, N=100, {seeds} seeds: p50 {:.2} s, p99 {:.2} s, max {:.2} s, undetected within 15 s: {undetected}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
    );
}

fn false_deaths_at_loss(seeds: u64) {
    let (mut deaths, mut suspicions, mut runs_with_deaths) = (0, 0, 0);
    for seed in 1..=seeds {
        let mut sim = formed(seed, 100, 0);
        sim.loss = 0.3;
        let t = sim.now;
        sim.run_until(t + secs(60));
        let d = sim.false_deaths();
        deaths += d;
        runs_with_deaths += usize::from(d > 0);
        suspicions += sim.false_suspicions();
    }
    println!(
        "30% loss, N=100, 60 s, {seeds} seeds: false deaths {deaths} (in {runs_with_deaths} runs), false suspicions {suspicions}"
    );
}

fn spread_1000(seeds: u64) {
    let cfg = SwimConfig::lan();
    let mut rounds = Vec::new();
    for seed in 1..=seeds {
        let mut sim = formed(seed, 1001, 1);
        let via = ChaCha8Rng::seed_from_u64(seed).gen_range(0..1000);
        let t = sim.now;
        sim.join(1000, &[via]);
        let done = sim.run_until_cond(t + secs(30), ms(10), |s| {
            s.all_see(1000, MemberState::Alive)
        });
        let took = done.map_or(f64::NAN, |at| (at - t).as_secs_f64());
        rounds.push(took / cfg.probe_interval.as_secs_f64());
    }
    let text: Vec<String> = rounds.iter().map(|r| format!("{r:.1}")).collect();
    println!(
        "join reaching all of 1,000 nodes: protocol periods ({} ms each) per seed: {}",
        cfg.probe_interval.as_millis(),
        text.join(", ")
    );
}

/// Bytes and datagrams each node sends per second in a quiet cluster of `n`, over two
/// push-pull intervals (at least 600 s), starting once the random first push-pulls of
/// the formation are over.
fn bytes_per_node(n: usize) {
    let cfg = SwimConfig::lan();
    let scale = (n as f64 / cfg.push_pull_scale_threshold as f64).max(1.0);
    let push_pull = cfg
        .push_pull_interval
        .mul_f64(scale)
        .min(cfg.push_pull_interval_max);
    let window = (push_pull * 2).max(secs(600));
    let mut sim = formed(1, n, 0);
    let start = sim.now.max(cfg.push_pull_interval + secs(5));
    sim.run_until(start);
    let (b0, d0) = (sim.bytes, sim.datagrams);
    sim.run_until(start + window);
    let per = |v: u64| v as f64 / n as f64 / window.as_secs_f64();
    println!(
        "steady state N={n}, {} s: {:.0} bytes/node/s sent, {:.1} datagrams/node/s",
        window.as_secs(),
        per(sim.bytes - b0),
        per(sim.datagrams - d0)
    );
}

/// One node of 20 handles datagrams up to 400 ms late, 120 s: suspicions it raises against
/// healthy members, all false suspicions, and false deaths, with and without Lifeguard.
fn slow_node(seeds: u64) {
    for lifeguard in [true, false] {
        let (mut by_slow, mut all, mut deaths) = (0, 0, 0);
        for seed in 1..=seeds {
            let cfg = SwimConfig {
                lifeguard,
                ..SwimConfig::lan()
            };
            let mut sim = Sim::new(seed, 20, cfg);
            sim.form(ms(5), secs(10));
            sim.nodes[0].slow = ms(400);
            let t = sim.now;
            sim.run_until(t + secs(120));
            let fresh = sim.log.iter().filter(|l| l.at >= t && l.subject_up);
            by_slow += fresh
                .clone()
                .filter(|l| l.observer == 0 && l.seen == Seen::Suspect)
                .count();
            all += fresh.filter(|l| l.seen == Seen::Suspect).count();
            deaths += sim.false_deaths();
        }
        println!(
            "slow node, N=20, 120 s, {seeds} seeds, lifeguard {lifeguard}: suspicions raised by the slow node {by_slow}, false suspicion events {all}, false deaths {deaths}"
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map_or("all", String::as_str);
    let seeds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
    let started = Instant::now();
    if matches!(what, "all" | "crash") {
        crash_to_dead(seeds);
    }
    if matches!(what, "all" | "loss") {
        false_deaths_at_loss(seeds);
    }
    if matches!(what, "all" | "slow") {
        slow_node(seeds.min(20));
    }
    if matches!(what, "all" | "spread") {
        spread_1000(seeds.min(5));
    }
    if matches!(what, "all" | "bytes") {
        bytes_per_node(10);
        bytes_per_node(100);
        bytes_per_node(1000);
    }
    eprintln!("(took {:.0} s)", started.elapsed().as_secs_f64());
}
