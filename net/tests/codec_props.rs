//! Property tests of the datagram codec: opening arbitrary bytes never panics, sealing
//! then opening round-trips, and any single-byte change or truncation is refused.

use kvs_net::{
    AuthError, ClusterSecret, DatagramHeader, DatagramKey, DatagramKind, MAX_DATAGRAM, MAX_PAYLOAD,
    ReplayWindow, open, seal,
};
use proptest::prelude::*;

fn key() -> DatagramKey {
    DatagramKey::new(&ClusterSecret::new("prop"))
}

proptest! {
    #[test]
    fn fuzz_datagram_opening_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let result = open(&key(), &bytes);
        if bytes.len() > MAX_DATAGRAM {
            let oversized = matches!(result, Err(AuthError::Oversized { .. }));
            prop_assert!(oversized);
        } else {
            prop_assert!(result.is_err());
        }
    }

    #[test]
    fn fuzz_datagram_seal_open_round_trip(
        hello in any::<bool>(),
        sender in any::<u64>(),
        receiver in any::<u64>(),
        stamp in any::<u64>(),
        payload in proptest::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD),
    ) {
        let kind = if hello { DatagramKind::Hello } else { DatagramKind::Data };
        let header = DatagramHeader { kind, sender, receiver, stamp };
        let mut wire = Vec::new();
        seal(&key(), &header, &payload, &mut wire).expect("fits");
        prop_assert!(wire.len() <= MAX_DATAGRAM);
        let opened = open(&key(), &wire).expect("valid");
        prop_assert_eq!((opened.header, opened.payload), (header, &payload[..]));
    }

    #[test]
    fn fuzz_datagram_any_change_is_refused(
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        at in any::<usize>(),
        flip in 1u8..=255,
        cut in any::<usize>(),
    ) {
        let mut wire = Vec::new();
        let header = DatagramHeader { kind: DatagramKind::Data, sender: 1, receiver: 2, stamp: 3 };
        seal(&key(), &header, &payload, &mut wire).expect("fits");
        let mut tampered = wire.clone();
        let i = at % tampered.len();
        tampered[i] ^= flip;
        prop_assert!(open(&key(), &tampered).is_err());
        prop_assert!(open(&key(), &wire[..cut % wire.len()]).is_err());
    }

    #[test]
    fn fuzz_datagram_replay_window_accepts_each_fresh_stamp_once(stamps in proptest::collection::vec(0u64..500, 1..300)) {
        const NOW: u64 = 1_000;
        let mut window: ReplayWindow<u8> = ReplayWindow::default();
        let mut accepted = std::collections::BTreeSet::new();
        for s in stamps {
            let newest = accepted.last().copied();
            let ok = window.check(&0, NOW + s, NOW).is_ok();
            if newest.is_none_or(|newest| s > newest) {
                // Newer than anything seen: never a replay.
                prop_assert!(ok, "stamp {} (newest so far {:?}) refused", s, newest);
            }
            if ok {
                prop_assert!(accepted.insert(s), "stamp {} accepted twice", s);
            }
        }
    }
}
