//! Tests of the durable store's replay: a torn tail, records LMDB never saw, replay
//! twice, and crash images (a copy of the data dir taken while the store runs).

use super::tests::audit;
use super::*;
use crate::store::lmdb::Staged;
use crate::store::record;
use kvs_sync::conformance::put;

/// The versions of `count` puts of `data` to keys `k1`, `k2`, ... (at 10 ms, 20 ms, ...),
/// and the log's items for them.
fn written(count: u64, data: &str) -> (Vec<Version>, Vec<Logged>) {
    let versions: Vec<Version> = (1..=count)
        .map(|n| plan_write(None, &put(&format!("k{n}"), data), 10 * n).unwrap())
        .collect();
    let items = versions
        .iter()
        .enumerate()
        .map(|(n, v)| Logged::Version(staged_as(&format!("k{}", n + 1), v)))
        .collect();
    (versions, items)
}

/// The one segment of the log in `wal_dir`.
fn only_segment(wal_dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(wal_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

#[test]
fn a_torn_tail_is_dropped_on_open_and_later_writes_survive_the_next_restart() {
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = dir.path().join("wal");
    drop(DurableStore::open(dir.path(), StoreOptions::default(), None).unwrap());
    // A log as a crash leaves it: two whole records and half of a third.
    let (versions, items) = written(3, "1");
    let mut wal = Wal::start(&wal_dir, 1).unwrap();
    wal.append(&[(1, &items[0]), (2, &items[1])]).unwrap();
    let whole = std::fs::metadata(only_segment(&wal_dir)).unwrap().len();
    wal.append(&[(3, &items[2])]).unwrap();
    drop(wal);
    let segment = only_segment(&wal_dir);
    let bytes = std::fs::read(&segment).unwrap();
    let torn = whole as usize + (bytes.len() - whole as usize) / 2;
    std::fs::write(&segment, &bytes[..torn]).unwrap();
    let store = DurableStore::open(dir.path(), StoreOptions::default(), None).unwrap();
    assert_eq!(store.get("k1").unwrap(), Some(versions[0].clone()));
    assert_eq!(store.get("k2").unwrap(), Some(versions[1].clone()));
    assert_eq!(store.get("k3").unwrap(), None, "the torn record is dropped");
    store.write_batch(&[put("later", "2")], 40).unwrap();
    drop(store);
    let store = DurableStore::open(dir.path(), StoreOptions::default(), None).unwrap();
    assert!(store.get("later").unwrap().is_some());
    assert!(store.get("k2").unwrap().is_some());
    assert_eq!(store.stats().unwrap().keys, 3);
}

/// Found by an audit: a byte changed inside the log's last record, whole and
/// acknowledged, was dropped as a torn write (the write lost, with a warning). A record
/// whole but with a wrong checksum and no part left as zeros is damage, and refused; one
/// whose end is zeros (not yet written when the crash came) is still a torn write.
#[test]
fn a_whole_last_record_damaged_is_refused_where_a_torn_one_is_dropped() {
    let crashed = tempfile::tempdir().unwrap();
    drop(DurableStore::open(crashed.path(), StoreOptions::default(), None).unwrap());
    let wal_dir = crashed.path().join("wal");
    let (_, items) = written(2, &"7".repeat(2000));
    let mut wal = Wal::start(&wal_dir, 1).unwrap();
    wal.append(&[(1, &items[0])]).unwrap();
    let segment = only_segment(&wal_dir);
    let first_end = std::fs::metadata(&segment).unwrap().len() as usize;
    wal.append(&[(2, &items[1])]).unwrap();
    drop(wal);
    let whole = std::fs::read(&segment).unwrap();
    assert!(
        whole.len() > first_end + 2000,
        "the second record is in the file"
    );
    let last_byte = whole.len() - 1;
    let trial = |change: &dyn Fn(&mut Vec<u8>)| {
        let dir = tempfile::tempdir().unwrap();
        copy_data_dir(crashed.path(), dir.path());
        let mut bytes = whole.clone();
        change(&mut bytes);
        std::fs::write(
            dir.path().join("wal").join(segment.file_name().unwrap()),
            bytes,
        )
        .unwrap();
        DurableStore::open(dir.path(), StoreOptions::default(), None)
            .map(|store| store.get("k2").unwrap().is_some())
            .map_err(|error| error.to_string())
    };
    // One byte changed in the middle of the last record: refused, saying where to cut.
    let flipped = trial(&|bytes| bytes[first_end + 1000] ^= 0x5a).unwrap_err();
    assert!(
        flipped.contains(&format!("damaged at byte {first_end}"))
            && flipped.contains("truncate -s"),
        "{flipped}"
    );
    // Its end left as zeros (a crash before that part was written, or an append that
    // failed midway): dropped.
    assert_eq!(trial(&|bytes| bytes[last_byte - 300..].fill(0)), Ok(false));
    assert_eq!(trial(&|bytes| bytes[last_byte - 5..].fill(0)), Ok(false));
    // Whole and intact: replayed.
    assert_eq!(trial(&|_| {}), Ok(true));
}

#[test]
fn a_replayed_log_restores_writes_lmdb_never_saw() {
    let dir = tempfile::tempdir().unwrap();
    // The store makes its log's folder at its first open.
    let wal_dir = dir.path().join("wal");
    let first = DurableStore::open(dir.path(), StoreOptions::default(), audit()).unwrap();
    first.write_batch(&[put("kept", "1")], 10).unwrap();
    drop(first);
    // A log written as if the process died before the applier ran.
    let orphan = plan_write(None, &put("orphan", "2"), 20).unwrap();
    let mut wal = Wal::start(&wal_dir, 100).unwrap();
    wal.append(&[(100, &Logged::Version(staged_as("orphan", &orphan)))])
        .unwrap();
    drop(wal);
    let store = DurableStore::open(dir.path(), StoreOptions::default(), audit()).unwrap();
    assert_eq!(store.get("orphan").unwrap(), Some(orphan));
    assert_eq!(
        store.get("kept").unwrap().unwrap().data.as_deref(),
        Some("1")
    );
    let later = store.write_batch(&[put("next", "3")], 30).unwrap();
    assert!(later[0].is_ok());
    assert_eq!(store.list("", None, 10, 40).unwrap().items.len(), 3);
}

fn staged(version: &Version) -> Staged {
    staged_as("k", version)
}

fn staged_as(key: &str, version: &Version) -> Staged {
    Staged {
        key: key.into(),
        version: version.clone().into(),
        record: record::encode(version, None).unwrap(),
    }
}

#[test]
fn replay_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    // The store makes its log's folder at its first open.
    let wal_dir = dir.path().join("wal");
    let v1 = plan_write(None, &put("k", "1"), 10).unwrap();
    let v2 = plan_write(Some(&v1), &put("k", "2"), 10).unwrap();
    {
        let store = DurableStore::open(dir.path(), StoreOptions::default(), audit()).unwrap();
        store
            .lmdb()
            .apply_logged(
                &[Logged::Version(staged(&v1)), Logged::Version(staged(&v2))],
                None,
                0,
            )
            .unwrap();
    }
    let mut wal = Wal::start(&wal_dir, 1).unwrap();
    wal.append(&[
        (1, &Logged::Version(staged(&v1))),
        (2, &Logged::Version(staged(&v2))),
    ])
    .unwrap();
    drop(wal);
    let store = DurableStore::open(dir.path(), StoreOptions::default(), audit()).unwrap();
    assert_eq!(store.get("k").unwrap(), Some(v2));
    assert_eq!(
        store.history("k").unwrap().len(),
        2,
        "no duplicate revisions"
    );
}

/// Copies every file of `from` into `to` (a data dir, flat but for `wal/`).
fn copy_data_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_data_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

#[test]
fn a_crash_that_cuts_an_append_anywhere_leaves_no_write_without_its_audit_entry() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    {
        let store = DurableStore::open(dir.path(), StoreOptions::default(), audit()).unwrap();
        store.write_batch(&[put("before", "1")], 10).unwrap();
        store.lmdb().sync().unwrap();
        // The applier cannot move the next write into LMDB: the data dir copied now is
        // what a crash right after its append would leave.
        let writer = store.lmdb().hold_writer();
        store
            .write_batch(&[put("a", "2"), put("b", "3")], 11)
            .unwrap();
        copy_data_dir(dir.path(), crashed.path());
        drop(writer);
    }
    let segment = std::fs::read_dir(crashed.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let whole = std::fs::read(&segment).unwrap();
    let mut seen_cut_between = false;
    for cut in (0..whole.len()).rev().step_by(7) {
        let trial = tempfile::tempdir().unwrap();
        copy_data_dir(crashed.path(), trial.path());
        let trial_segment = trial.path().join("wal").join(segment.file_name().unwrap());
        std::fs::write(&trial_segment, &whole[..cut]).unwrap();
        let store = DurableStore::open(trial.path(), StoreOptions::default(), audit()).unwrap();
        let entries = store.audit_entries(1, 100).unwrap().unwrap();
        for key in ["before", "a", "b"] {
            let written = store.get(key).unwrap().is_some();
            let audited = entries.iter().any(|e| e.key == key);
            assert!(
                !written || audited,
                "cut at {cut}: {key} is there without its entry"
            );
            seen_cut_between |= audited && !written;
        }
        assert!(
            matches!(
                store.verify_audit().unwrap(),
                Some(AuditVerdict::Intact { .. })
            ),
            "cut at {cut}"
        );
    }
    assert!(
        seen_cut_between,
        "some cut falls between an entry and its write"
    );
}

/// A version written through the log, then deleted by a tombstone a session merged (which
/// skips the log), and the tombstone purged: LMDB holds nothing of the key, while the
/// log's open segment still holds the version. A crash then must not bring the key back
/// at the replay. (It did: the replay applied every record of the log against what LMDB
/// held, and it held nothing. Found by reading the simulator against the node.)
#[test]
fn a_crash_after_a_purge_does_not_replay_the_purged_key_back() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let ttl_ms = 1_000;
    {
        let store = DurableStore::open(dir.path(), StoreOptions::default(), audit()).unwrap();
        let written = store.write_batch(&[put("k", "1")], 10).unwrap();
        let version = written[0].as_ref().unwrap().version.clone();
        let delete = kvs_sync::WriteOp {
            mutation: kvs_sync::Mutation::Delete,
            ..put("k", "1")
        };
        let tombstone = plan_write(Some(&version), &delete, 20).unwrap();
        assert_eq!(
            store
                .merge_from_session(vec![("k".into(), tombstone)])
                .unwrap(),
            1
        );
        let purged = store.purge(20 + ttl_ms + 1, ttl_ms, None).unwrap();
        assert_eq!(purged.tombstones, 1, "the tombstone was purged");
        assert_eq!(store.get("k").unwrap(), None);
        let logged = std::fs::read_dir(dir.path().join("wal")).unwrap().count();
        assert!(logged > 0, "the log still holds its segment");
        copy_data_dir(dir.path(), crashed.path());
    }
    let store = DurableStore::open(crashed.path(), StoreOptions::default(), audit()).unwrap();
    assert_eq!(store.get("k").unwrap(), None, "the purged key came back");
    // Writes after the restart go on past the records the log held, and are replayed
    // after another crash.
    let again = tempfile::tempdir().unwrap();
    store.write_batch(&[put("after", "2")], 30).unwrap();
    copy_data_dir(crashed.path(), again.path());
    drop(store);
    let store = DurableStore::open(again.path(), StoreOptions::default(), audit()).unwrap();
    assert_eq!(
        store.get("after").unwrap().and_then(|v| v.data).as_deref(),
        Some("2")
    );
    assert_eq!(store.get("k").unwrap(), None);
}
