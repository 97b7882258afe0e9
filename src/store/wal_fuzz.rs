//! Fuzz loops (proptest) of the write-ahead log's records: what the log writes replays
//! exactly; a log cut at any byte replays exactly the records complete before the cut;
//! a changed byte ends replay at the record it falls in; arbitrary bytes, framed or not,
//! never panic and never yield a record that its bytes do not encode. Run long with
//! `PROPTEST_CASES` (see docs/fuzzing.md).

use proptest::prelude::*;

use super::*;
use kvs_sync::{AuditEntry, Version, VersionId};

/// A comparable view of a recovered record.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Version {
        seq: u64,
        key: String,
        version: Version,
        record: Vec<u8>,
    },
    Audit {
        seq: u64,
        entry: AuditEntry,
    },
}

fn seen(seq: u64, item: &Logged) -> Seen {
    match item {
        Logged::Version(staged) => Seen::Version {
            seq,
            key: staged.key.clone(),
            version: Version::clone(&staged.version),
            record: staged.record.clone(),
        },
        Logged::Audit(entry) => Seen::Audit {
            seq,
            entry: entry.clone(),
        },
    }
}

/// How an in-memory replay of one segment ended.
#[derive(Debug, PartialEq)]
enum End {
    /// Exactly after a record.
    Clean,
    /// In a torn or corrupt record.
    Torn,
}

/// Replays the bytes of one segment as `recover` replays the last one.
fn replay(mut bytes: &[u8]) -> (Vec<Seen>, End) {
    let mut out = Vec::new();
    loop {
        match read_record(&mut bytes) {
            Ok(Some(record)) => out.push(seen(record.seq, &record.item)),
            Ok(None) => return (out, End::Clean),
            Err(ReadError::Torn) => return (out, End::Torn),
            Err(ReadError::Io(error)) => panic!("reading memory failed: {error}"),
        }
    }
}

/// The frame the log writes for `(seq, item)`.
fn frame(seq: u64, item: &Logged) -> Vec<u8> {
    let mut payload = seq.to_be_bytes().to_vec();
    encode_item(item, &mut payload).expect("encodable");
    framed(&payload)
}

/// `payload` with a correct length and checksum in front.
fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// What any record read from arbitrary bytes must satisfy: it is what its own bytes
/// encode (a version's record decodes to its version, and writing it again gives the
/// bytes it was read from; an audit entry survives being written again).
fn assert_faithful(records: &[Seen]) -> Result<(), TestCaseError> {
    for record in records {
        match record {
            Seen::Version {
                seq,
                key,
                version,
                record: bytes,
            } => {
                prop_assert_eq!(&record::decode(key, bytes).ok(), &Some(version.clone()));
                let item = Logged::Version(Staged {
                    key: key.clone(),
                    version: version.clone().into(),
                    record: bytes.clone(),
                });
                let (again, end) = replay(&frame(*seq, &item));
                prop_assert_eq!((again, end), (vec![record.clone()], End::Clean));
            }
            Seen::Audit { seq, entry } => {
                let (again, end) = replay(&frame(*seq, &Logged::Audit(entry.clone())));
                prop_assert_eq!((again, end), (vec![record.clone()], End::Clean));
            }
        }
    }
    Ok(())
}

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..=max).prop_map(String::from_iter)
}

/// Versions as the store writes them: `expires_at` is never `Some(0)` (the record
/// encoding's "never"; admission refuses it from peers, and a TTL is above zero).
/// Values are short, or with `long` up to 3,000 bytes (compressible).
fn version(long: bool) -> impl Strategy<Value = Version> {
    let data = if long {
        prop_oneof![text(30), "[a-z ]{0,3000}"].boxed()
    } else {
        prop_oneof![text(30), "[a-z ]{0,100}"].boxed()
    };
    (
        (any::<u64>(), any::<u64>(), any::<u128>()),
        proptest::option::of(data),
        proptest::option::of(text(10)),
        proptest::option::of(text(10)),
        any::<u16>(),
        proptest::option::of(1..=u64::MAX),
    )
        .prop_map(
            |((timestamp, origin, uuid), data, owner, group, permissions, expires_at)| Version {
                id: VersionId {
                    timestamp,
                    origin_joined_at: origin,
                    uuid: uuid::Uuid::from_u128(uuid),
                },
                data,
                owner,
                group,
                permissions,
                expires_at,
            },
        )
}

fn audit_entry() -> impl Strategy<Value = AuditEntry> {
    (
        any::<(u64, u64)>(),
        (text(8), text(8), text(16), text(8), text(8)),
    )
        .prop_map(
            |((seq, timestamp), (actor, action, key, hash, prev_hash))| AuditEntry {
                seq,
                timestamp,
                actor,
                action,
                key,
                hash,
                prev_hash,
            },
        )
}

/// An item to log, as the strategies make it (`Logged` is neither `Debug` nor `Clone`).
#[derive(Debug, Clone)]
enum Item {
    /// A version, its record compressed from `compress` bytes on.
    Version {
        key: String,
        version: Version,
        compress: Option<usize>,
    },
    Audit(AuditEntry),
}

impl Item {
    fn logged(&self) -> Logged {
        match self {
            Item::Version {
                key,
                version,
                compress,
            } => Logged::Version(Staged {
                key: key.clone(),
                version: version.clone().into(),
                record: record::encode(version, *compress).expect("encodable"),
            }),
            Item::Audit(entry) => Logged::Audit(entry.clone()),
        }
    }
}

fn item(long: bool) -> impl Strategy<Value = Item> {
    prop_oneof![
        3 => (text(40), version(long), proptest::option::of(0usize..2000))
            .prop_map(|(key, version, compress)| Item::Version { key, version, compress }),
        1 => audit_entry().prop_map(Item::Audit),
    ]
}

/// `min` to `max` items with increasing sequence numbers from `first`.
fn items(min: usize, max: usize, long: bool) -> impl Strategy<Value = (u64, Vec<Item>)> {
    (
        any::<u32>(),
        proptest::collection::vec(item(long), min..=max),
    )
        .prop_map(|(first, items)| (u64::from(first), items))
}

/// A segment of `items` as the log writes it, and where each record ends in it.
fn segment(first: u64, items: &[Item]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for (n, item) in items.iter().enumerate() {
        bytes.extend(frame(first + n as u64, &item.logged()));
        ends.push(bytes.len());
    }
    (bytes, ends)
}

/// `ci` cases, or `PROPTEST_CASES` when it is set (`with_cases` alone would ignore it).
fn cases(ci: u32) -> ProptestConfig {
    if std::env::var_os("PROPTEST_CASES").is_some() {
        ProptestConfig::default()
    } else {
        ProptestConfig::with_cases(ci)
    }
}

// Disk writes and a replay per cut: fewer cases in CI, to stay near a second in a debug
// build.
proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn fuzz_wal_write_replay_round_trips((first, items) in items(0, 8, true), split in any::<usize>()) {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::start(dir.path(), first).unwrap();
        let logged: Vec<Logged> = items.iter().map(Item::logged).collect();
        let records: Vec<(u64, &Logged)> =
            logged.iter().enumerate().map(|(n, item)| (first + n as u64, item)).collect();
        // In two writes, as group commit batches them.
        let split = split % (records.len() + 1);
        wal.write(&records[..split]).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        wal.write(&records[split..]).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let expected: Vec<Seen> = records.iter().map(|&(seq, item)| seen(seq, item)).collect();
        let recovered: Vec<Seen> = recover(dir.path())
            .unwrap()
            .iter()
            .map(|r| seen(r.seq, &r.item))
            .collect();
        prop_assert_eq!(&recovered, &expected);
        // The file holds exactly the frames of the records, nothing else.
        let (_, path) = segments(dir.path()).unwrap().pop().unwrap();
        prop_assert_eq!(std::fs::read(path).unwrap(), segment(first, &items).0);
    }

    #[test]
    fn fuzz_wal_a_cut_anywhere_keeps_exactly_the_complete_records((first, items) in items(0, 6, false)) {
        let (bytes, ends) = segment(first, &items);
        let all: Vec<Seen> =
            items.iter().enumerate().map(|(n, item)| seen(first + n as u64, &item.logged())).collect();
        for cut in 0..=bytes.len() {
            let complete = ends.iter().take_while(|&&end| end <= cut).count();
            let at_boundary = cut == 0 || ends.contains(&cut);
            let end = if at_boundary { End::Clean } else { End::Torn };
            prop_assert_eq!(replay(&bytes[..cut]), (all[..complete].to_vec(), end), "cut at {}", cut);
        }
    }
}

proptest! {
    // proptest's default: 256 cases, or PROPTEST_CASES.

    #[test]
    fn fuzz_wal_a_changed_byte_ends_replay_at_its_record(
        (first, items) in items(1, 6, true),
        at in any::<usize>(),
        flip in 1u8..=255,
    ) {
        let (mut bytes, ends) = segment(first, &items);
        let at = at % bytes.len();
        bytes[at] ^= flip;
        let hit = ends.iter().take_while(|&&end| end <= at).count();
        let before: Vec<Seen> =
            items[..hit].iter().enumerate().map(|(n, item)| seen(first + n as u64, &item.logged())).collect();
        // The checksum catches any one changed byte of a payload or of the checksum; a
        // changed length makes the check run over other bytes (a false match has odds of
        // 2^-32).
        prop_assert_eq!(replay(&bytes), (before, End::Torn), "byte {} of record {}", at, hit);
    }

    #[test]
    fn fuzz_wal_arbitrary_bytes_never_yield_an_unwritten_record(
        bytes in proptest::collection::vec(any::<u8>(), 0..2000),
    ) {
        let (records, _) = replay(&bytes);
        // Without a matching checksum nothing is read; should one match by chance, the
        // record must still be what its bytes encode.
        assert_faithful(&records)?;
        prop_assert!(records.is_empty(), "{} records read from noise", records.len());
    }

    #[test]
    fn fuzz_wal_framed_garbage_is_refused_or_faithful(
        seq in any::<u64>(),
        kind in prop_oneof![Just(VERSION), Just(AUDIT), any::<u8>()],
        key in proptest::collection::vec(any::<u8>(), 0..40),
        declared_key_len in prop_oneof![Just(None), any::<u16>().prop_map(Some)],
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            // A valid record or audit entry, changed at one byte.
            (version(true), any::<usize>(), any::<u8>()).prop_map(|(v, at, flip)| {
                let mut record = record::encode(&v, Some(64)).unwrap();
                let at = at % record.len();
                record[at] ^= flip;
                record
            }),
            (audit_entry(), any::<usize>(), any::<u8>()).prop_map(|(e, at, byte)| {
                let mut json = serde_json::to_vec(&e).unwrap();
                let at = at % json.len();
                json[at] = byte;
                json
            }),
        ],
        tail in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        // A checksummed frame around a payload that the log did not write.
        let mut payload = seq.to_be_bytes().to_vec();
        payload.push(kind);
        if kind == VERSION {
            let len = declared_key_len.unwrap_or(key.len() as u16);
            payload.extend_from_slice(&len.to_be_bytes());
            payload.extend_from_slice(&key);
        }
        payload.extend_from_slice(&body);
        let mut bytes = framed(&payload);
        bytes.extend_from_slice(&tail);
        let (records, _) = replay(&bytes);
        assert_faithful(&records)?;
        prop_assert!(records.len() <= 1 + tail.len() / 19, "{} records", records.len());
    }
}
