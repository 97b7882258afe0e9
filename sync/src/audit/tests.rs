//! Tests of the audit chain: hashing under the key, verification against the recorded
//! head, and reconciling the head's copies.

use super::head::{RecordedHead, reconcile};
use super::*;
use crate::Precondition;

fn op(key: &str, mutation: Mutation) -> WriteOp {
    WriteOp {
        key: key.into(),
        mutation,
        precondition: Precondition::None,
        uuid: uuid::Uuid::nil(),
        origin_joined_at: 1,
        owner: None,
        group: None,
        permissions: 0xf31,
        actor: Some("alice".into()),
    }
}

fn key() -> AuditKey {
    AuditKey::from_secret("the cluster secret")
}

fn chain_with(key: &AuditKey, n: u64) -> Vec<AuditEntry> {
    let mut prev = GENESIS_HASH.to_owned();
    (1..=n)
        .map(|seq| {
            let put = Mutation::Put {
                data: "1".into(),
                ttl_ms: None,
            };
            let op = op(&format!("k{seq}"), put);
            let entry = AuditEntry::for_op(seq, 1000 + seq, &op, &prev, key);
            prev = entry.hash.clone();
            entry
        })
        .collect()
}

fn chain(n: u64) -> Vec<AuditEntry> {
    chain_with(&key(), n)
}

/// The head a node records for `entries`.
fn head_of(entries: &[AuditEntry]) -> RecordedHead {
    entries.last().map_or_else(RecordedHead::genesis, |last| {
        RecordedHead::genesis().advanced(last.seq, &last.hash)
    })
}

/// Verifies `entries` against the head recorded for `recorded`.
fn verify_against(recorded: &[AuditEntry], entries: Vec<AuditEntry>) -> AuditVerdict {
    verify_chain(&key(), &head_of(recorded), entries)
}

fn verify(entries: Vec<AuditEntry>) -> AuditVerdict {
    let head = head_of(&entries);
    verify_chain(&key(), &head, entries)
}

fn first_bad(verdict: &AuditVerdict) -> Option<u64> {
    match verdict {
        AuditVerdict::Broken { first_bad_seq, .. } => Some(*first_bad_seq),
        AuditVerdict::Intact { .. } => None,
    }
}

/// Rewrites `entries` from index `from` on with `hash`, relinking them.
fn rehash(entries: &mut [AuditEntry], from: usize, hash: impl Fn(&AuditEntry) -> String) {
    for i in from..entries.len() {
        if i > 0 {
            entries[i].prev_hash = entries[i - 1].hash.clone();
        }
        entries[i].hash = hash(&entries[i]);
    }
}

#[test]
fn an_intact_chain_verifies() {
    assert_eq!(
        verify(chain(5)),
        AuditVerdict::Intact {
            entries: 5,
            unkeyed: 0
        }
    );
    assert_eq!(
        verify(Vec::new()),
        AuditVerdict::Intact {
            entries: 0,
            unkeyed: 0
        }
    );
}

#[test]
fn alteration_removal_and_reordering_are_found() {
    let mut altered = chain(5);
    altered[2].actor = "mallory".into();
    assert_eq!(first_bad(&verify_against(&chain(5), altered)), Some(3));
    let mut removed = chain(5);
    removed.remove(1);
    assert_eq!(first_bad(&verify_against(&chain(5), removed)), Some(2));
    let mut reordered = chain(5);
    reordered.swap(3, 4);
    assert_eq!(first_bad(&verify_against(&chain(5), reordered)), Some(4));
    let truncated_front: Vec<_> = chain(3).into_iter().skip(1).collect();
    assert_eq!(
        first_bad(&verify_against(&chain(3), truncated_front)),
        Some(1)
    );
}

#[test]
fn a_chain_cut_short_of_its_recorded_head_is_found() {
    let full = chain(5);
    let cut: Vec<_> = chain(5).into_iter().take(3).collect();
    let verdict = verify_against(&full, cut);
    assert_eq!(first_bad(&verdict), Some(4));
    let AuditVerdict::Broken { reason, .. } = verdict else {
        unreachable!()
    };
    assert!(reason.contains("entries 4 to 5 are missing"), "{reason}");
    assert_eq!(first_bad(&verify_against(&full, Vec::new())), Some(1));
}

#[test]
fn rehashing_without_the_key_is_found() {
    let mut forged = chain(5);
    forged[1].key = "other".into();
    rehash(&mut forged, 1, AuditEntry::unkeyed_hash);
    assert_eq!(
        first_bad(&verify_against(&chain(5), forged.clone())),
        Some(2)
    );
    assert_eq!(
        first_bad(&verify(forged)),
        Some(2),
        "even against a head that matches the forgery"
    );
    let mut other_key = chain(5);
    rehash(&mut other_key, 1, |e| {
        e.keyed_hash(&AuditKey::from_secret("guessed"))
    });
    assert_eq!(first_bad(&verify(other_key)), Some(2));
}

#[test]
fn keys_are_derived_and_separate() {
    let (a, b) = (AuditKey::from_secret("a"), AuditKey::from_secret("b"));
    let entry = &chain(1)[0];
    assert_ne!(entry.keyed_hash(&a), entry.keyed_hash(&b));
    assert_ne!(entry.keyed_hash(&a), entry.unkeyed_hash());
    assert_eq!(
        entry.keyed_hash(&a),
        entry.keyed_hash(&AuditKey::from_secret("a"))
    );
    assert!(AuditKey::from_secret("").is_weak() && !a.is_weak());
    assert!(!format!("{a:?}").contains(&hex::encode(a.key)));
}

#[test]
fn unkeyed_entries_verify_only_up_to_the_recorded_boundary() {
    let mut old = chain(3);
    rehash(&mut old, 0, AuditEntry::unkeyed_hash);
    let mut head = head_of(&old);
    head.unkeyed_through = 3;
    assert_eq!(
        verify_chain(&key(), &head, old.clone()),
        AuditVerdict::Intact {
            entries: 3,
            unkeyed: 3
        }
    );
    let next = AuditEntry::for_op(4, 2000, &op("k4", Mutation::Delete), &old[2].hash, &key());
    let mut grown = old.clone();
    grown.push(next);
    let head = head.advanced(4, &grown[3].hash);
    assert!(matches!(
        verify_chain(&key(), &head, grown.clone()),
        AuditVerdict::Intact { unkeyed: 3, .. }
    ));
    let mut forged = grown;
    forged[3].actor = "mallory".into();
    rehash(&mut forged, 3, AuditEntry::unkeyed_hash);
    assert_eq!(
        first_bad(&verify_chain(&key(), &head, forged)),
        Some(4),
        "past the boundary, an unkeyed hash is a forgery"
    );
}

#[test]
fn a_sealed_head_opens_only_under_its_key() {
    let head = head_of(&chain(2));
    let sealed = head.seal(&key());
    assert_eq!(RecordedHead::unseal(&sealed, &key()), Ok(head.clone()));
    assert!(RecordedHead::unseal(&sealed, &AuditKey::from_secret("x")).is_err());
    let text = String::from_utf8(sealed).unwrap();
    let rewound = text.replace("\"seq\":2", "\"seq\":1");
    assert!(RecordedHead::unseal(rewound.as_bytes(), &key()).is_err());
    assert!(RecordedHead::unseal(b"{", &key()).is_err());
}

type Copies<'a> = [(&'a str, Option<&'a [u8]>); 2];

fn reconciled(copies: Copies<'_>, entries: &[AuditEntry], adopt: bool) -> head::Reconciled {
    let at = |seq: u64| Ok::<_, ()>(entries.iter().find(|e| e.seq == seq).cloned());
    reconcile(&key(), copies, entries.last(), at, adopt).unwrap()
}

#[test]
fn reconciling_continues_after_the_recorded_head_when_the_chain_was_cut() {
    let full = chain(5);
    let sealed = head_of(&full).seal(&key());
    let cut = &full[..3];
    let found = reconciled(
        [("meta", Some(&sealed)), ("file", Some(&sealed))],
        cut,
        true,
    );
    assert_eq!(found.head, head_of(&full), "the chain goes on after seq 5");
    assert!(!found.notes.is_empty());
    assert_eq!(
        first_bad(&verify_chain(&key(), &found.head, cut.to_vec())),
        Some(4)
    );
    // A copy rewound to an older head (from a backup) does not hide the cut.
    let older = head_of(cut).seal(&key());
    let found = reconciled([("meta", Some(&older)), ("file", Some(&sealed))], cut, true);
    assert_eq!(found.head.seq, 5);
    let intact = reconciled(
        [("meta", Some(&sealed)), ("file", Some(&older))],
        &full,
        true,
    );
    assert_eq!((intact.head, intact.notes), (head_of(&full), Vec::new()));
}

#[test]
fn missing_or_forged_copies_leave_a_lasting_flaw() {
    let full = chain(4);
    let sealed = head_of(&full).seal(&key());
    let one_missing = reconciled([("meta", Some(&sealed)), ("file", None)], &full, true);
    let flaw = one_missing.head.flaw.clone().expect("a flaw");
    assert_eq!(flaw.seq, 5);
    assert!(flaw.reason.contains("file was missing"), "{}", flaw.reason);
    // The flaw is sealed into every later head and reported.
    let later = one_missing.head.advanced(6, "h").seal(&key());
    let found = reconciled(
        [("meta", Some(&later)), ("file", Some(&later))],
        &full,
        true,
    );
    assert_eq!(found.head.flaw, Some(flaw));
    assert_eq!(
        first_bad(&verify_chain(&key(), &found.head, full.clone())),
        Some(5)
    );

    let both_missing = reconciled([("meta", None), ("file", None)], &full, true);
    assert_eq!(both_missing.head.flaw.map(|f| f.seq), Some(5));
    let foreign = head_of(&full).seal(&AuditKey::from_secret("other"));
    let forged = reconciled([("meta", Some(&foreign)), ("file", None)], &full, true);
    assert!(forged.head.flaw.unwrap().reason.contains("not authentic"));
}

#[test]
fn a_fresh_chain_and_an_unkeyed_one_are_adopted() {
    let fresh = reconciled([("meta", None), ("file", None)], &[], true);
    assert_eq!(
        (fresh.head, fresh.notes),
        (RecordedHead::genesis(), Vec::new())
    );
    let genesis = RecordedHead::genesis().seal(&key());
    let half = reconciled([("meta", None), ("file", Some(&genesis))], &[], true);
    assert_eq!(
        half.head,
        RecordedHead::genesis(),
        "a crash at the first start"
    );

    let mut old = chain(3);
    rehash(&mut old, 0, AuditEntry::unkeyed_hash);
    let adopted = reconciled([("meta", None), ("file", None)], &old, true);
    assert_eq!(adopted.head.unkeyed_through, 3);
    assert_eq!(adopted.head.flaw, None);
    assert_eq!(
        verify_chain(&key(), &adopted.head, old.clone()),
        AuditVerdict::Intact {
            entries: 3,
            unkeyed: 3
        }
    );
    let not_at_verification = reconciled([("meta", None), ("file", None)], &old, false);
    assert!(not_at_verification.head.flaw.is_some());
    let keyed = reconciled([("meta", None), ("file", None)], &chain(3), true);
    assert!(keyed.head.flaw.is_some(), "a keyed chain always has a head");
}

#[test]
fn actions_name_records() {
    let put = || Mutation::Put {
        data: "{}".into(),
        ttl_ms: None,
    };
    let cases = [
        (op("a/b", put()), "put", "a/b"),
        (op("a/b", Mutation::Delete), "delete", "a/b"),
        (op("_auth/users/u1", put()), "user.put", "u1"),
        (op("_auth/users/u1", Mutation::Delete), "user.delete", "u1"),
        (op("_auth/deleted-users/u1", put()), "user.delete", "u1"),
        (op("_auth/groups/g1", put()), "group.put", "g1"),
        (op("_auth/deleted-groups/g1", put()), "group.delete", "g1"),
        (op("_auth/tokens/j1", put()), "token.issue", "j1"),
        (op("_auth/revoked/j1", put()), "token.revoke", "j1"),
    ];
    for (op, action, key) in cases {
        assert_eq!(describe(&op), (action.to_owned(), key.to_owned()));
    }
}
