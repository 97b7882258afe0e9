//! Tests of the write-ahead log: records round-trip, torn tails end replay, damage is an
//! error (the fuzz loops are in `wal_fuzz.rs`).

use super::*;
use kvs_sync::{Version, VersionId};

fn item(key: &str, version: &Version) -> Logged {
    Logged::Version(Staged {
        key: key.into(),
        version: version.clone().into(),
        record: record::encode(version, None).unwrap(),
    })
}

fn version_of(item: &Logged) -> (&str, &Version) {
    match item {
        Logged::Version(staged) => (&staged.key, &staged.version),
        Logged::Audit(_) => panic!("not a version"),
    }
}

fn version(ts: u64) -> Version {
    Version {
        id: VersionId {
            timestamp: ts,
            origin_joined_at: 1,
            uuid: uuid::Uuid::new_v4(),
        },
        data: Some(format!("{ts}")),
        owner: None,
        group: None,
        permissions: 0xf31,
        expires_at: None,
    }
}

#[test]
fn appended_records_are_recovered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::start(dir.path(), 1).unwrap();
    let (a, b, c) = (version(1), version(2), version(3));
    wal.append(&[(1, &item("a", &a)), (2, &item("b", &b))])
        .unwrap();
    wal.append(&[(3, &item("ключ", &c))]).unwrap();
    let got = recover(dir.path()).unwrap();
    let seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(version_of(&got[2].item), ("ключ", &c));
}

#[test]
fn audit_entries_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::start(dir.path(), 1).unwrap();
    let entry = kvs_sync::AuditEntry {
        seq: 1,
        timestamp: 5,
        actor: "alice".into(),
        action: "put".into(),
        key: "k".into(),
        hash: "h".into(),
        prev_hash: kvs_sync::GENESIS_HASH.into(),
    };
    wal.append(&[(1, &Logged::Audit(entry.clone()))]).unwrap();
    let got = recover(dir.path()).unwrap();
    assert!(matches!(&got[0].item, Logged::Audit(e) if *e == entry));
}

/// A log of two segments (records 1-2, then 3-4), as after a rotation; returns them.
fn two_segments(dir: &Path) -> (PathBuf, PathBuf) {
    let mut wal = Wal::start(dir, 1).unwrap();
    wal.append(&[(1, &item("a", &version(1))), (2, &item("b", &version(2)))])
        .unwrap();
    drop(wal);
    let other = tempfile::tempdir().unwrap();
    let mut wal = Wal::start(other.path(), 3).unwrap();
    wal.append(&[(3, &item("c", &version(3))), (4, &item("d", &version(4)))])
        .unwrap();
    drop(wal);
    let second = segment_path(dir, 3);
    std::fs::copy(segment_path(other.path(), 3), &second).unwrap();
    (segment_path(dir, 1), second)
}

fn flip_last_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn damage_in_a_closed_segment_is_an_error_not_an_end() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = two_segments(dir.path());
    let seqs: Vec<u64> = recover(dir.path()).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    // The last segment's tail may be torn by a crash (cut short): replay stops there.
    let mut torn = std::fs::read(&second).unwrap();
    torn.pop();
    std::fs::write(&second, torn).unwrap();
    let seqs: Vec<u64> = recover(dir.path()).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    // A closed segment was synced whole: damage there would skip record 2 and replay
    // 3 after it, so it is an error.
    flip_last_byte(&first);
    let error = recover(dir.path()).err().expect("damage is an error");
    assert!(error.to_string().contains("damaged"), "{error}");
}

#[test]
fn a_read_error_is_an_error_not_an_end() {
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk read failed"))
        }
    }
    assert!(matches!(read_record(&mut Failing), Err(ReadError::Io(_))));
    assert!(matches!(read_record(&mut &[][..]), Ok(None)));
    assert!(matches!(
        read_record(&mut &[1, 2, 3][..]),
        Err(ReadError::Torn)
    ));
}

#[test]
fn a_torn_or_corrupt_tail_ends_replay() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::start(dir.path(), 1).unwrap();
    wal.append(&[(1, &item("a", &version(1))), (2, &item("b", &version(2)))])
        .unwrap();
    let (_, path) = segments(dir.path()).unwrap().pop().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for cut in 1..20 {
        std::fs::write(&path, &bytes[..bytes.len() - cut]).unwrap();
        assert_eq!(recover(dir.path()).unwrap().len(), 1, "cut {cut}");
    }
    // A byte changed in the last record, whole: damage a crash does not leave (a crash
    // leaves what it had not written of a record as zeros: see the forty records).
    let mut flipped = bytes.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0xff;
    std::fs::write(&path, &flipped).unwrap();
    let said = recover(dir.path()).err().expect("damage").to_string();
    assert!(said.contains("checksum does not match"), "{said}");
    std::fs::write(&path, b"garbage that is not a log at all").unwrap();
    assert!(recover(dir.path()).unwrap().is_empty());
}

/// A newest segment of records 1 to 40 (values of about 200 bytes); its bytes and the
/// offset where each record begins.
fn forty_records(dir: &Path) -> (PathBuf, Vec<u8>, Vec<usize>) {
    let mut wal = Wal::start(dir, 1).unwrap();
    let mut starts = Vec::new();
    for seq in 1..=40u64 {
        starts.push(wal.size as usize);
        let mut v = version(seq);
        v.data = Some(format!("\"{}\"", "v".repeat(200)));
        wal.append(&[(seq, &item(&format!("k{seq}"), &v))]).unwrap();
    }
    let (_, path) = segments(dir).unwrap().pop().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes, starts)
}

#[test]
fn damage_followed_by_whole_records_in_the_newest_segment_is_an_error_not_an_end() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes, starts) = forty_records(dir.path());
    // A changed byte in record 3: records 4-40 follow it whole.
    let mut damaged = bytes.clone();
    damaged[starts[2] + 30] ^= 0xaa;
    std::fs::write(&path, &damaged).unwrap();
    let error = recover(dir.path()).err().expect("damage is an error");
    let said = error.to_string();
    assert!(
        said.contains(&format!("damaged at byte {}", starts[2])),
        "{said}"
    );
    assert!(
        said.contains("after 2 records") && said.contains("seq 4"),
        "{said}"
    );
    // In the last record, nothing follows: zeros there are a torn tail, as a crash
    // leaves, and a changed byte is damage.
    let mut torn = bytes.clone();
    torn[starts[39] + 30..].fill(0);
    std::fs::write(&path, &torn).unwrap();
    assert_eq!(recover(dir.path()).unwrap().len(), 39);
    let mut damaged = bytes.clone();
    damaged[starts[39] + 30] ^= 0xaa;
    std::fs::write(&path, &damaged).unwrap();
    let said = recover(dir.path()).err().expect("damage").to_string();
    assert!(
        said.contains(&format!("damaged at byte {}", starts[39])),
        "{said}"
    );
}

#[test]
fn unwritten_zeros_before_a_later_record_are_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes, starts) = forty_records(dir.path());
    // A crash wrote a later page of the last append but not an earlier one: zeros
    // from the sector boundary after record 20 begins to the one before record 25
    // begins, whole records after them.
    let from = (starts[19] / 512 + 1) * 512;
    let to = (starts[24] / 512) * 512;
    assert!(from + 512 <= to, "a whole sector between {from} and {to}");
    let mut zeroed = bytes.clone();
    zeroed[from..to].fill(0);
    std::fs::write(&path, &zeroed).unwrap();
    // The records that end before the zeros are kept, the rest dropped.
    let intact = starts
        .iter()
        .skip(1)
        .take_while(|&&next| next <= from)
        .count() as u64;
    assert!((20..25).contains(&intact), "{intact}");
    let seqs: Vec<u64> = recover(dir.path()).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=intact).collect::<Vec<u64>>());
}

#[test]
fn start_discards_replayed_segments_and_release_drops_applied_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::start(dir.path(), 1).unwrap();
    wal.append(&[(1, &item("a", &version(1)))]).unwrap();
    let mut wal = Wal::start(dir.path(), 2).unwrap();
    assert!(recover(dir.path()).unwrap().is_empty());
    wal.append(&[(2, &item("b", &version(2)))]).unwrap();
    wal.size = SEGMENT_BYTES;
    wal.append(&[(3, &item("c", &version(3)))]).unwrap();
    assert_eq!(segments(dir.path()).unwrap().len(), 2);
    remove_segments(wal.release_through(1));
    assert_eq!(
        segments(dir.path()).unwrap().len(),
        2,
        "seq 2 is not applied yet"
    );
    remove_segments(wal.release_through(2));
    assert_eq!(segments(dir.path()).unwrap().len(), 1);
    let left: Vec<u64> = recover(dir.path()).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(left, [3]);
}

/// Appends records of seqs `seqs` to `wal`, one per write.
fn append_each(wal: &mut Wal, seqs: impl IntoIterator<Item = u64>) {
    for seq in seqs {
        wal.append(&[(seq, &item(&format!("k{seq}"), &version(seq)))])
            .unwrap();
    }
}

#[test]
fn a_segment_made_ahead_keeps_its_size_is_cut_when_closed_and_replays_to_its_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::start(dir.path(), 1).unwrap();
    wal.segment_bytes = 4096;
    let mut seq = 0;
    while wal.spare.is_none() {
        seq += 1;
        append_each(&mut wal, [seq]);
    }
    assert!(
        wal.size >= 2048,
        "the spare is made once the segment is half full"
    );
    let spare = wal.spare.as_ref().unwrap();
    let waited = std::time::Instant::now();
    while !spare.is_finished() {
        assert!(waited.elapsed().as_secs() < 30, "the spare is never made");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let first_segment_bytes = loop {
        let before = wal.size;
        seq += 1;
        append_each(&mut wal, [seq]);
        if wal.segments.len() == 2 {
            break before;
        }
    };
    assert!(wal.made_ahead, "the spare is taken at the rotation");
    append_each(&mut wal, seq + 1..=seq + 3);
    let last = seq + 3;
    let found = segments(dir.path()).unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(
        std::fs::metadata(&found[0].1).unwrap().len(),
        first_segment_bytes,
        "a closed segment holds its records alone"
    );
    assert_eq!(
        std::fs::metadata(&found[1].1).unwrap().len(),
        4096,
        "records are written over the zeros, not appended"
    );
    let left = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(left, 2, "the spare became the second segment");
    let seqs: Vec<u64> = recover(dir.path()).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<u64>>());
    // A record cut short in the zeros is still a torn tail.
    let torn_at = wal.size;
    wal.file.write_at(&[9, 9, 9], torn_at).unwrap();
    let seqs: Vec<u64> = recover(dir.path()).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<u64>>());
}

#[test]
fn start_removes_spares_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let left = spare_path(dir.path(), 7);
    std::fs::write(&left, [0u8; 64]).unwrap();
    let _wal = Wal::start(dir.path(), 1).unwrap();
    assert!(!left.exists());
    assert_eq!(segments(dir.path()).unwrap().len(), 1);
}

#[test]
fn no_spare_is_made_where_the_disk_lacks_room_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = spare_path(dir.path(), 1);
    // More than any disk here holds: refused before a byte is written.
    assert!(make_spare(&path, u64::MAX / 8).is_err());
    assert!(!path.exists());
    let made = make_spare(&path, 8192).unwrap();
    assert_eq!(made.metadata().unwrap().len(), 8192);
}
