//! Tests of the durable store: the conformance suite, staging and durability, and the
//! audit chain across restarts (replay: `replay_tests.rs`).

use super::*;
use crate::store::faults::Fault;
use kvs_sync::conformance::put;

/// The audit key of the tests' stores.
pub(super) fn audit() -> Option<AuditKey> {
    Some(AuditKey::from_secret("test cluster secret"))
}

kvs_sync::store_conformance_tests!(|options| {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = DurableStore::open(dir.path(), options, audit()).expect("open store");
    (dir, store)
});

#[test]
fn staged_writes_are_planned_on_but_read_only_once_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = DurableStore::open(dir.path(), StoreOptions::default(), audit()).unwrap();
    let (results, through) = store.stage(&[put("k", "1")], || 10).unwrap();
    assert!(results[0].as_ref().unwrap().created);
    assert_eq!(store.get("k").unwrap(), None, "not durable yet");
    let mut create = put("k", "2");
    create.precondition = kvs_sync::Precondition::IfAbsent;
    let (results, later) = store.stage(&[create, put("k", "3")], || 10).unwrap();
    assert_eq!(results[0], Err(WriteRejected::PreconditionFailed));
    let overwrite = results[1].as_ref().unwrap();
    assert!(!overwrite.created);
    assert!(
        overwrite.version.id.timestamp > 10,
        "the causal rule saw the staged write"
    );
    assert!(later > through);
    assert_eq!(
        store.unsettled_since(),
        Some(10),
        "staged writes are unsettled from their stamp on"
    );
    // One sync covers everything staged before it, the later batch too.
    store.make_durable(through).unwrap();
    assert_eq!(store.unsettled_since(), None);
    assert_eq!(store.get("k").unwrap().unwrap().data.as_deref(), Some("3"));
    store.make_durable(later).unwrap();
    assert_eq!(store.history("k").unwrap().len(), 2);
}

#[test]
fn concurrent_writers_each_read_their_write_and_all_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store =
            Arc::new(DurableStore::open(dir.path(), StoreOptions::default(), audit()).unwrap());
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for i in 0..100 {
                        let key = format!("w{w}/{i}");
                        let done = store.write_batch(&[put(&key, "1")], 10).unwrap();
                        assert!(done[0].is_ok());
                        assert!(store.get(&key).unwrap().is_some(), "read after ack");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
    }
    let store = DurableStore::open(dir.path(), StoreOptions::default(), audit()).unwrap();
    assert_eq!(store.list("", None, 1000, 20).unwrap().items.len(), 800);
    assert_eq!(
        store.verify_audit().unwrap(),
        Some(AuditVerdict::Intact {
            entries: 800,
            unkeyed: 0
        })
    );
}

/// A store whose write-ahead log fails as `faults` plans (commits of 64 MiB).
fn faulty(dir: &std::path::Path, faults: &Arc<Faults>) -> DurableStore {
    let options = StoreOptions::default();
    DurableStore::open_with(dir, options, audit(), APPLY_BYTES, Arc::clone(faults)).unwrap()
}

#[test]
fn a_failed_fdatasync_breaks_the_log_which_refuses_every_write_and_is_kept_for_replay() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let store = faulty(dir.path(), &faults);
    store.write_batch(&[put("kept", "1")], 10).unwrap();
    faults.inject(Fault::Sync);
    let failed = store.write_batch(&[put("unsure", "2")], 11).unwrap_err();
    assert!(failed.to_string().contains("fdatasync"), "{failed}");
    assert_eq!(store.get("unsure").unwrap(), None, "never acknowledged");
    let refused = store.write_batch(&[put("k", "3")], 12).unwrap_err();
    assert!(refused.to_string().contains("broken"), "{refused}");
    let version = plan_write(None, &put("pushed", "4"), 13).unwrap();
    assert!(store.merge(&[("pushed".into(), version.clone())]).is_err());
    assert!(
        store
            .merge_from_session(vec![("pushed".into(), version)])
            .is_err()
    );
    assert!(store.close().is_err(), "the log is not discarded");
    drop(store);
    let store = DurableStore::open(dir.path(), StoreOptions::default(), audit()).unwrap();
    assert!(store.get("kept").unwrap().is_some());
    assert_eq!(store.get("k").unwrap(), None);
    assert_eq!(store.get("pushed").unwrap(), None);
    assert!(matches!(
        store.verify_audit().unwrap(),
        Some(kvs_sync::AuditVerdict::Intact { .. })
    ));
    store.write_batch(&[put("after", "5")], 20).unwrap();
}

#[test]
fn a_write_refused_for_a_full_disk_is_cut_back_and_the_log_and_audit_chain_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let store = faulty(dir.path(), &faults);
    store.write_batch(&[put("a", "1")], 10).unwrap();
    for _ in 0..2 {
        faults.inject(Fault::Full);
        let failed = store.write_batch(&[put("lost", "2")], 11).unwrap_err();
        assert!(matches!(failed, StoreError::Full(_)), "{failed}");
    }
    store.write_batch(&[put("b", "3")], 12).unwrap();
    assert_eq!(store.get("lost").unwrap(), None);
    let entries = store.audit_entries(0, 10).unwrap().unwrap();
    assert_eq!(entries.len(), 2, "the failed writes left no audit entries");
    assert_eq!(
        entries[1].prev_hash, entries[0].hash,
        "the chain was rewound"
    );
    // What is in the log now replays cleanly: no half record from the torn write.
    let (_, through) = store.stage(&[put("c", "4")], || 13).unwrap();
    faults.inject(Fault::Sync);
    assert!(store.make_durable(through).is_err());
    drop(store);
    let wal = dir.path().join("wal");
    let recovered = wal::recover(&wal).unwrap();
    let keys: Vec<&str> = recovered
        .iter()
        .filter_map(|r| match &r.item {
            Logged::Version(staged) => Some(staged.key.as_str()),
            Logged::Audit(_) => None,
        })
        .collect();
    assert_eq!(keys, ["a", "b", "c"], "every intact record, in order");
    let store = DurableStore::open(dir.path(), StoreOptions::default(), audit()).unwrap();
    assert_eq!(store.get("lost").unwrap(), None);
    assert!(store.get("c").unwrap().is_some());
    assert!(matches!(
        store.verify_audit().unwrap(),
        Some(kvs_sync::AuditVerdict::Intact { .. })
    ));
}

/// Found by an audit of the simulator's disk faults: an append that failed (an EIO, or
/// torn) was cut back and the next write taken, where a node whose disk fails a write
/// is to refuse writes from then on (issue 10); a restart replays what the log holds.
#[test]
fn a_failed_or_torn_write_breaks_the_log_until_a_restart() {
    for fault in [Fault::Write, Fault::TornWrite] {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(Faults::default());
        let store = faulty(dir.path(), &faults);
        store.write_batch(&[put("a", "1")], 10).unwrap();
        faults.inject(fault);
        let failed = store.write_batch(&[put("lost", "2")], 11).unwrap_err();
        assert!(failed.to_string().contains("injected"), "{failed}");
        let refused = store.write_batch(&[put("next", "3")], 12).unwrap_err();
        assert!(
            refused.to_string().contains("broken"),
            "{fault:?}: {refused}"
        );
        assert!(
            store.get("a").unwrap().is_some(),
            "what was acknowledged stays"
        );
        drop(store);
        let store = DurableStore::open(dir.path(), StoreOptions::default(), audit()).unwrap();
        assert!(store.get("a").unwrap().is_some());
        assert_eq!(store.get("lost").unwrap(), None, "{fault:?}");
        assert_eq!(store.get("next").unwrap(), None);
        store.write_batch(&[put("after", "4")], 13).unwrap();
        assert!(matches!(
            store.verify_audit().unwrap(),
            Some(kvs_sync::AuditVerdict::Intact { .. })
        ));
    }
}

#[test]
fn a_write_that_cannot_be_cut_back_breaks_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let store = faulty(dir.path(), &faults);
    faults.inject(Fault::TornWrite);
    faults.inject(Fault::CutBack);
    let failed = store.write_batch(&[put("torn", "1")], 10).unwrap_err();
    assert!(
        failed
            .to_string()
            .contains("cutting the segment back failed"),
        "{failed}"
    );
    let refused = store.write_batch(&[put("next", "2")], 11).unwrap_err();
    assert!(refused.to_string().contains("broken"), "{refused}");
    drop(store);
    // Nothing of the torn record, and nothing after it, comes back.
    let store = DurableStore::open(dir.path(), StoreOptions::default(), audit()).unwrap();
    assert_eq!(store.get("torn").unwrap(), None);
    assert_eq!(store.get("next").unwrap(), None);
    store.write_batch(&[put("after", "3")], 12).unwrap();
}

#[test]
fn the_audit_chain_continues_across_restarts_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let mut op = put("a", "1");
    op.actor = Some("alice".into());
    {
        let store = DurableStore::open(dir.path(), StoreOptions::default(), audit()).unwrap();
        store.write_batch(&[op.clone(), put("b", "2")], 10).unwrap();
        let mut failing = put("a", "3");
        failing.precondition = kvs_sync::Precondition::IfAbsent;
        store.write_batch(&[failing], 11).unwrap();
    }
    let store = DurableStore::open(dir.path(), StoreOptions::default(), audit()).unwrap();
    store.write_batch(&[put("a", "4")], 12).unwrap();
    let entries = store.audit_entries(1, 100).unwrap().unwrap();
    let summary: Vec<(u64, &str, &str)> = entries
        .iter()
        .map(|e| (e.seq, e.actor.as_str(), e.key.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (1, "alice", "a"),
            (2, "anonymous", "b"),
            (3, "anonymous", "a")
        ]
    );
    assert_eq!(entries[2].prev_hash, entries[1].hash);
    assert_eq!(
        store.verify_audit().unwrap(),
        Some(AuditVerdict::Intact {
            entries: 3,
            unkeyed: 0
        })
    );
    assert_eq!(store.audit_entries(3, 100).unwrap().unwrap().len(), 1);
    let off = tempfile::tempdir().unwrap();
    let store = DurableStore::open(off.path(), StoreOptions::default(), None).unwrap();
    store.write_batch(&[put("a", "1")], 1).unwrap();
    assert_eq!(store.audit_entries(1, 10).unwrap(), None);
}

/// The entries of a chain written before chains were keyed (SHA-256 only), `n` long.
fn unkeyed_chain(n: u64) -> Vec<Logged> {
    let mut prev = kvs_sync::GENESIS_HASH.to_owned();
    (1..=n)
        .map(|seq| {
            let op = put(&format!("k{seq}"), "1");
            let mut entry = AuditEntry::for_op(seq, seq, &op, &prev, &audit().unwrap());
            entry.hash = entry.unkeyed_hash();
            prev.clone_from(&entry.hash);
            Logged::Audit(entry)
        })
        .collect()
}

#[test]
fn a_chain_from_before_keys_is_adopted_and_reported_as_unkeyed() {
    let dir = tempfile::tempdir().unwrap();
    {
        // A store as the previous version left it: unkeyed entries, no recorded head.
        let store = DurableStore::open(dir.path(), StoreOptions::default(), None).unwrap();
        store
            .lmdb()
            .apply_logged(&unkeyed_chain(3), None, 0)
            .unwrap();
    }
    assert!(!dir.path().join(crate::store::AUDIT_HEAD_FILE).exists());
    let store = DurableStore::open(dir.path(), StoreOptions::default(), audit()).unwrap();
    assert_eq!(
        store.verify_audit().unwrap(),
        Some(AuditVerdict::Intact {
            entries: 3,
            unkeyed: 3
        })
    );
    store.write_batch(&[put("k4", "1")], 10).unwrap();
    assert_eq!(
        store.verify_audit().unwrap(),
        Some(AuditVerdict::Intact {
            entries: 4,
            unkeyed: 3
        })
    );
}

#[test]
fn another_secret_or_a_cut_chain_fails_verification_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = DurableStore::open(dir.path(), StoreOptions::default(), audit()).unwrap();
        store
            .write_batch(&[put("a", "1"), put("b", "1"), put("c", "1")], 10)
            .unwrap();
    }
    {
        let other = Some(AuditKey::from_secret("another secret"));
        let store = DurableStore::open(dir.path(), StoreOptions::default(), other).unwrap();
        let verdict = store.verify_audit().unwrap().unwrap();
        assert!(
            matches!(
                verdict,
                AuditVerdict::Broken {
                    first_bad_seq: 1,
                    ..
                }
            ),
            "{verdict:?}"
        );
    }
    // The head in LMDB is rewound with the entries (as from an older copy); the file
    // still has the newest head, and the chain goes on after it.
    let dir = tempfile::tempdir().unwrap();
    let older = {
        let store = DurableStore::open(dir.path(), StoreOptions::default(), audit()).unwrap();
        store.write_batch(&[put("a", "1")], 10).unwrap();
        store.caught_up().unwrap();
        let older = store.lmdb().audit_head().unwrap().unwrap();
        store
            .write_batch(&[put("b", "1"), put("c", "1")], 11)
            .unwrap();
        older
    };
    {
        let store = DurableStore::open(dir.path(), StoreOptions::default(), None).unwrap();
        let first = store.lmdb().audit_entries(1, 1).unwrap();
        let lmdb = store.lmdb();
        lmdb.clear_audit().unwrap();
        lmdb.apply_logged(&[Logged::Audit(first[0].clone())], None, 0)
            .unwrap();
        lmdb.set_audit_head(&older).unwrap();
    }
    let store = DurableStore::open(dir.path(), StoreOptions::default(), audit()).unwrap();
    let cut = store.verify_audit().unwrap().unwrap();
    assert!(
        matches!(
            cut,
            AuditVerdict::Broken {
                first_bad_seq: 2,
                ..
            }
        ),
        "{cut:?}"
    );
    store.write_batch(&[put("d", "1")], 12).unwrap();
    let entries = store.audit_entries(0, 10).unwrap().unwrap();
    assert_eq!(
        entries.last().unwrap().seq,
        4,
        "the chain went on after the head"
    );
    let later = store.verify_audit().unwrap().unwrap();
    assert!(
        matches!(
            later,
            AuditVerdict::Broken {
                first_bad_seq: 2,
                ..
            }
        ),
        "the gap stays: {later:?}"
    );
}

/// Versions a session brings, `count` keys from `first`, of about 1 KiB each.
fn session_batch(first: usize, count: usize) -> Vec<(String, Version)> {
    (first..first + count)
        .map(|n| {
            let version = Version {
                id: kvs_sync::VersionId {
                    timestamp: 1000 + n as u64,
                    origin_joined_at: 1,
                    uuid: uuid::Uuid::from_u128(n as u128),
                },
                data: Some(format!("\"{}\"", "x".repeat(1000))),
                owner: None,
                group: None,
                permissions: 0xf31,
                expires_at: None,
            };
            (format!("s/{n:06}"), version)
        })
        .collect()
}

#[test]
fn session_merges_wait_while_the_applier_is_behind() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        max_revisions: 0,
        compression_min_bytes: None,
    };
    // Commits of 64 KiB: the backlog may hold 128 KiB, about 120 of these versions.
    let store = Arc::new(
        DurableStore::open_with(dir.path(), options, None, 64 << 10, Arc::default()).unwrap(),
    );
    let writer = store.lmdb().hold_writer();
    let (calls, per_call) = (40, 20);
    let (merged, progress) = std::sync::mpsc::channel();
    let merging = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            for call in 0..calls {
                let batch = session_batch(call * per_call, per_call);
                assert_eq!(store.merge_from_session(batch).unwrap(), per_call);
                merged.send(call).unwrap();
            }
        })
    };
    let mut returned = 0;
    while progress
        .recv_timeout(std::time::Duration::from_millis(500))
        .is_ok()
    {
        returned += 1;
    }
    assert!(
        returned < calls,
        "every merge returned while LMDB could take nothing"
    );
    let queued = store.shared.lock().queued_bytes;
    assert!(
        queued <= 2 * (64 << 10) + per_call * 1200,
        "{queued} bytes queued after {returned} merges"
    );
    // The applier goes on once it can commit, and the merges with it.
    drop(writer);
    merging.join().unwrap();
    assert_eq!(store.stats().unwrap().keys, (calls * per_call) as u64);
}
