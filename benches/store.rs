//! Criterion benchmarks of the node's store: a single durable put, a group commit of 64
//! puts, and a point read. Run with `cargo bench --bench store`.

// criterion_group! and criterion_main! generate undocumented public functions.
#![allow(missing_docs)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use kvs::store::DurableStore;
use kvs_sync::{Mutation, Precondition, Store, StoreOptions, WriteOp};
use uuid::Uuid;

fn put(key: String, value: &str) -> WriteOp {
    WriteOp {
        key,
        mutation: Mutation::Put {
            data: value.to_owned(),
            ttl_ms: None,
        },
        precondition: Precondition::None,
        uuid: Uuid::new_v4(),
        origin_joined_at: 1,
        owner: None,
        group: None,
        permissions: 0xf31,
        actor: None,
    }
}

fn value() -> String {
    format!("\"{}\"", "x".repeat(254))
}

fn store_benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = DurableStore::open(
        dir.path(),
        StoreOptions::default(),
        Some(kvs_sync::AuditKey::from_secret("bench")),
    )
    .expect("open");
    let value = value();
    let mut n = 0u64;
    c.bench_function("put (one durable write)", |b| {
        b.iter(|| {
            n += 1;
            store
                .write_batch(&[put(format!("put/{}", n % 10_000), &value)], n)
                .expect("write")
        })
    });
    c.bench_function("batch commit (64 writes, one fsync)", |b| {
        b.iter_batched(
            || {
                (0..64)
                    .map(|i| put(format!("batch/{i}"), &value))
                    .collect::<Vec<_>>()
            },
            |ops| store.write_batch(&ops, 1).expect("write"),
            BatchSize::SmallInput,
        )
    });
    let keys: Vec<WriteOp> = (0..10_000)
        .map(|i| put(format!("get/{i}"), &value))
        .collect();
    for chunk in keys.chunks(1000) {
        store.write_batch(chunk, 1).expect("preload");
    }
    store.stats().expect("caught up");
    let mut i = 0usize;
    c.bench_function("get (point read)", |b| {
        b.iter(|| {
            i = (i + 7919) % 10_000;
            store.get(&format!("get/{i}")).expect("read")
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = store_benches
}
criterion_main!(benches);
