//! Measures what one anti-entropy session costs: round trips and bytes to repair `k`
//! differing keys between two in-memory stores of `n` keys (256-byte values), for
//! k = 0, 1, 100 and 10,000; every message goes through the codec as over a stream.
//!
//! `cargo run --release -p kvs-sync --example diff_cost [-- N]` (N defaults to 1,000,000).

use std::time::Instant;

use kvs_sync::{Admission, MemoryStore, Store, StoreOptions, Version, VersionId, exchange_locally};

const NOW: u64 = 1_800_000_000_000;

fn versions(n: usize) -> Vec<(String, Version)> {
    let value = format!("\"{}\"", "x".repeat(254));
    (0..n)
        .map(|i| {
            let version = Version {
                id: VersionId {
                    timestamp: NOW - 1000,
                    origin_joined_at: 1,
                    uuid: uuid::Uuid::from_u128(i as u128),
                },
                data: Some(value.clone()),
                owner: Some("c41b7a2e-0d1f-4c55-9f0e-3b5a8d2c1e77".into()),
                group: None,
                permissions: 0xf31,
                expires_at: None,
            };
            (format!("bench/{i:08}"), version)
        })
        .collect()
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let all = versions(n);
    let rules = Admission {
        now_ms: NOW,
        max_clock_skew_ms: 30_000,
        tombstone_ttl_ms: 7 * 24 * 3600 * 1000,
    };
    println!("| differing keys | round trips | bytes out | bytes in | total | time |");
    println!("|---|---|---|---|---|---|");
    for k in [0, 1, 100, 10_000] {
        let complete = MemoryStore::new(StoreOptions {
            max_revisions: 0,
            ..StoreOptions::default()
        });
        let missing = MemoryStore::new(StoreOptions {
            max_revisions: 0,
            ..StoreOptions::default()
        });
        complete.merge(&all).expect("memory store");
        // The k missing keys are spread over the key space.
        let step = n.checked_div(k).unwrap_or(n + 1);
        let kept: Vec<(String, Version)> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| k == 0 || i % step != 0 || i / step >= k)
            .map(|(_, kv)| kv.clone())
            .collect();
        missing.merge(&kept).expect("memory store");
        let started = Instant::now();
        let exchange = exchange_locally(&missing, &complete, rules).expect("session");
        let took = started.elapsed();
        assert_eq!(missing.merkle().unwrap(), complete.merkle().unwrap());
        println!(
            "| {k} | {} | {} | {} | {} | {:.1} ms |",
            exchange.round_trips,
            exchange.bytes_out,
            exchange.bytes_in,
            exchange.bytes_out + exchange.bytes_in,
            took.as_secs_f64() * 1000.0
        );
    }
}
