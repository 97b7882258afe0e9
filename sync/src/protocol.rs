//! The anti-entropy wire protocol: the messages of one diff session and their codec.
//!
//! A session runs on one bidirectional stream between an initiator (I) and a responder
//! (R), which take turns:
//! 1. I -> R `Hello`: I's root and level-2 hashes (256), I's [`Standing`] and floor.
//! 2. R -> I `Standing` (R's, with its floor), then `Nodes` (level 2): R's children of each level-2 node
//!    that differs; or `Done` when the roots agree.
//! 3. I -> R `Nodes` (level 3): I's leaves under each level-3 node that differs; or `Done`.
//! 4. R -> I `Entries`: for the next chunk of differing leaves, R's (key hash, entry
//!    hash) pairs; or `Done` when no leaf differs.
//! 5. I -> R `Versions`* then `Want`: I's versions of the keys whose entries differ, and
//!    the key hashes of R's entries that I holds otherwise or lacks.
//! 6. R -> I `Versions`* for the wanted keys, then the next chunk's `Entries` (back to 5)
//!    or `Done`.
//!
//! So a repair takes three round trips whatever the store's size, and the bytes follow
//! the differing leaves: about 2 KB of hashes per round when nothing differs.
//!
//! Frames are bincode (`=2.0.1`, standard config) of [`Message`]; every frame carries the
//! protocol version, and a frame that does not decode is a protocol error that ends the
//! session (the peer is retried next round).

use serde::{Deserialize, Serialize};

use crate::Version;

/// The diff protocol's version (2: [`Standing`] in place of an "established" flag, and
/// `Want` tells the keys the initiator lacks from those it holds otherwise; 3: each side
/// tells its floor with its standing).
pub const PROTOCOL: u8 = 3;

/// What a frame's versions may add up to, by [`crate::approximate_size`]: a `Versions`
/// message, or a push batch, is filled up to this.
pub const VERSIONS_BUDGET: usize = 4 * 1024 * 1024;

/// The largest encoded message: the frame limit of the stream transports it travels on
/// (`kvs_net::MAX_FRAME`, the same by a check in the driver). A message holds at most
/// [`VERSIONS_BUDGET`] of versions, or one version alone, which `max_value_bytes` keeps
/// below this.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The least [`crate::approximate_size`] counts for one version.
pub const VERSION_SIZE_FLOOR: usize = 64;

/// The most versions one frame carries. No sender goes beyond it (see
/// [`VERSIONS_BUDGET`]); a receiver refuses a frame that claims more before decoding
/// any, since a version of a few bytes on the wire takes well over a hundred in memory (a
/// 16 MiB frame of the smallest versions decoded to about 115 MB; the count bounds that
/// overhead to about 12 MB, by an estimate of a decoded version's size, not measured).
pub const MAX_FRAME_VERSIONS: usize = VERSIONS_BUDGET / VERSION_SIZE_FLOOR;

/// What a side's copy of the data can vouch for, which decides whether the other side
/// may take its lack of a key as a deletion (see `Session::with_standing`). Whatever the
/// standing, a copy vouches only for versions stamped at or after its floor (see
/// `Session::with_floor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Standing {
    /// It completed a session with a peer since it started (and was not stale), or it is
    /// the cluster's first node: it holds what the cluster holds, within pushes in flight.
    Established,
    /// It expects peers and has not completed a session with one since it started (or
    /// only over no data). It held what the cluster held before its last complete
    /// session, at `since` (Unix ms; 0: never, as on a new node), younger than
    /// `tombstone_ttl`, except what was stamped in `blind`.
    Joining {
        /// When its last complete session started (Unix ms; 0: never).
        since: u64,
        /// A time `[from, to)` it caught up blind over (see [`Standing::Blind`]), if any.
        blind: Option<(u64, u64)>,
    },
    /// Its last complete session, at `since` (Unix ms), is older than `tombstone_ttl`: it
    /// may hold keys deleted meanwhile whose tombstones are gone everywhere. It held what
    /// the cluster held before `since`, except what was stamped in `blind`.
    Stale {
        /// When its last complete session started (Unix ms).
        since: u64,
        /// A time `[from, to)` it caught up blind over (see [`Standing::Blind`]), if any.
        blind: Option<(u64, u64)>,
    },
    /// Established, except that it may lack versions stamped in `[from, to)`: it caught
    /// up when no live peer was established (a whole cluster back after longer than
    /// `tombstone_ttl`), or through a peer that did. It holds what the cluster held
    /// before `from` and what the live nodes have held since `to`; a node still away
    /// then may hold writes of the time between that it never saw.
    Blind {
        /// The start of the time it may lack versions of (Unix ms).
        from: u64,
        /// The end of that time (Unix ms).
        to: u64,
    },
}

/// One message of a diff session; see the module doc for the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Opens a session.
    Hello {
        /// The initiator's root.
        root: u64,
        /// The initiator's 256 level-2 hashes.
        level2: Vec<u64>,
        /// The initiator's standing.
        standing: Standing,
        /// The initiator's floor (Unix ms).
        floor: u64,
    },
    /// The responder's first word: its standing and floor.
    Standing {
        /// The responder's standing.
        standing: Standing,
        /// The responder's floor (Unix ms).
        floor: u64,
    },
    /// The children of some nodes of `level`, [`crate::merkle::FANOUT`] per parent.
    Nodes {
        /// The level of the parents.
        level: u8,
        /// The parents' indexes on their level, ascending.
        parents: Vec<u32>,
        /// Their children's hashes, parent by parent.
        hashes: Vec<u64>,
    },
    /// The responder's entries of a chunk of differing leaves.
    Entries {
        /// The leaves of the chunk.
        leaves: Vec<u16>,
        /// (key hash, entry hash) of every key held in those leaves.
        entries: Vec<(u64, u64)>,
    },
    /// Versions for the other side to merge (at most [`MAX_FRAME_VERSIONS`]).
    Versions(#[serde(deserialize_with = "bounded_versions")] Vec<(String, Version)>),
    /// Key hashes whose versions the initiator asks for.
    Want {
        /// Keys it holds another version of.
        differing: Vec<u64>,
        /// Keys it holds nothing of.
        lacking: Vec<u64>,
    },
    /// The session is over.
    Done,
}

#[derive(Serialize, Deserialize)]
struct Frame {
    protocol: u8,
    message: Message,
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not a frame of any protocol version.
    #[error("undecodable frame: {0}")]
    Malformed(String),
    /// A frame of another protocol version.
    #[error("protocol version {0}, expected {PROTOCOL}")]
    Version(u8),
}

/// Decodes a list of versions that holds at most [`MAX_FRAME_VERSIONS`], refusing a
/// longer one by its length, before any of it is decoded.
pub(crate) fn bounded_versions<'de, D>(decoder: D) -> Result<Vec<(String, Version)>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<(String, Version)>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "at most {MAX_FRAME_VERSIONS} versions")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let claimed = seq.size_hint().unwrap_or(0);
            if claimed > MAX_FRAME_VERSIONS {
                return Err(serde::de::Error::invalid_length(claimed, &self));
            }
            // As serde's own Vec does: no more than 1 MiB reserved on a length's word.
            let reserve = claimed.min((1 << 20) / std::mem::size_of::<(String, Version)>());
            let mut versions = Vec::with_capacity(reserve);
            while let Some(version) = seq.next_element()? {
                if versions.len() == MAX_FRAME_VERSIONS {
                    return Err(serde::de::Error::invalid_length(versions.len() + 1, &self));
                }
                versions.push(version);
            }
            Ok(versions)
        }
    }
    decoder.deserialize_seq(Bounded)
}

/// Encodes one message as a frame.
pub fn encode(message: &Message) -> Vec<u8> {
    #[derive(Serialize)]
    struct FrameRef<'a> {
        protocol: u8,
        message: &'a Message,
    }
    let frame = FrameRef {
        protocol: PROTOCOL,
        message,
    };
    // Encoding into a Vec fails only for types serde cannot express; Message has none.
    bincode::serde::encode_to_vec(&frame, bincode::config::standard()).unwrap_or_default()
}

/// Decodes a frame; never panics, whatever the bytes.
pub fn decode(bytes: &[u8]) -> Result<Message, FrameError> {
    let config = bincode::config::standard().with_limit::<{ 64 * 1024 * 1024 }>();
    let (frame, used): (Frame, usize) = bincode::serde::decode_from_slice(bytes, config)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(FrameError::Malformed("trailing bytes".into()));
    }
    if frame.protocol != PROTOCOL {
        return Err(FrameError::Version(frame.protocol));
    }
    Ok(frame.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VersionId;

    fn samples() -> Vec<Message> {
        let version = Version {
            id: VersionId {
                timestamp: 5,
                origin_joined_at: 1,
                uuid: uuid::Uuid::from_u128(9),
            },
            data: Some("[1]".into()),
            owner: Some("u".into()),
            group: None,
            permissions: 0xf31,
            expires_at: Some(9),
        };
        vec![
            Message::Hello {
                root: 7,
                level2: vec![1; 256],
                standing: Standing::Established,
                floor: 2,
            },
            Message::Standing {
                standing: Standing::Stale {
                    since: 3,
                    blind: Some((1, 2)),
                },
                floor: 0,
            },
            Message::Standing {
                standing: Standing::Joining {
                    since: 0,
                    blind: None,
                },
                floor: 8,
            },
            Message::Standing {
                standing: Standing::Blind { from: 4, to: 6 },
                floor: 1,
            },
            Message::Nodes {
                level: 2,
                parents: vec![3],
                hashes: vec![4; 16],
            },
            Message::Entries {
                leaves: vec![1, 2],
                entries: vec![(1, 2)],
            },
            Message::Versions(vec![("k".into(), version)]),
            Message::Want {
                differing: vec![5, 6],
                lacking: vec![7],
            },
            Message::Done,
        ]
    }

    #[test]
    fn frames_roundtrip() {
        for message in samples() {
            assert_eq!(decode(&encode(&message)), Ok(message));
        }
    }

    #[test]
    fn versions_beyond_what_a_sender_packs_are_refused() {
        let tombstone = |n: usize| {
            let id = VersionId {
                timestamp: 5,
                origin_joined_at: 1,
                uuid: uuid::Uuid::from_u128(9),
            };
            let version = Version {
                id,
                data: None,
                owner: None,
                group: None,
                permissions: 0,
                expires_at: None,
            };
            (n.to_string(), version)
        };
        let most = Message::Versions((0..MAX_FRAME_VERSIONS).map(tombstone).collect());
        assert_eq!(decode(&encode(&most)), Ok(most));
        let one_more = Message::Versions((0..=MAX_FRAME_VERSIONS).map(tombstone).collect());
        assert!(matches!(
            decode(&encode(&one_more)),
            Err(FrameError::Malformed(_))
        ));
        // Senders fill a message by approximate_size up to VERSIONS_BUDGET, so the
        // smallest versions make at most MAX_FRAME_VERSIONS.
        assert!(crate::approximate_size("k", &tombstone(0).1) > VERSION_SIZE_FLOOR);
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        for message in samples() {
            let good = encode(&message);
            for cut in 0..good.len() {
                assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
            }
            let mut other = good.clone();
            other[0] = PROTOCOL + 1;
            assert_eq!(decode(&other), Err(FrameError::Version(PROTOCOL + 1)));
            let mut longer = good;
            longer.push(0);
            assert!(decode(&longer).is_err());
        }
        for garbage in [
            &b"\x01\xff\xff\xff\xff\xff"[..],
            &[1, 3, 0xfc, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(decode(garbage).is_err());
        }
    }
}

/// Strategies shared by the fuzz loops of this crate's decoders (here and in the push
/// driver): arbitrary versions and messages, strings of any `char` (controls included).
#[cfg(test)]
pub(crate) mod fuzz {
    use proptest::prelude::*;

    use super::{Message, Standing};
    use crate::{Version, VersionId};

    /// Any string of up to `max` chars, control characters and non-ASCII included.
    pub(crate) fn text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 0..=max).prop_map(String::from_iter)
    }

    /// Any version, valid for the store or not (the codec carries what it is given).
    pub(crate) fn version() -> impl Strategy<Value = Version> {
        (
            (any::<u64>(), any::<u64>(), any::<u128>()),
            proptest::option::of(text(40)),
            proptest::option::of(text(12)),
            proptest::option::of(text(12)),
            any::<u16>(),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(
                |((timestamp, origin, uuid), data, owner, group, permissions, expires_at)| {
                    Version {
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
                    }
                },
            )
    }

    /// Up to `max` (key, version) pairs, keys of any chars.
    pub(crate) fn versions(max: usize) -> impl Strategy<Value = Vec<(String, Version)>> {
        proptest::collection::vec((text(24), version()), 0..=max)
    }

    /// Any standing.
    fn standing() -> impl Strategy<Value = Standing> {
        prop_oneof![
            Just(Standing::Established),
            (any::<u64>(), any::<Option<(u64, u64)>>())
                .prop_map(|(since, blind)| Standing::Joining { since, blind }),
            (any::<u64>(), any::<Option<(u64, u64)>>())
                .prop_map(|(since, blind)| Standing::Stale { since, blind }),
            any::<(u64, u64)>().prop_map(|(from, to)| Standing::Blind { from, to }),
        ]
    }

    /// Any message of the diff protocol.
    pub(crate) fn message() -> impl Strategy<Value = Message> {
        use proptest::collection::vec;
        prop_oneof![
            (
                any::<u64>(),
                vec(any::<u64>(), 0..300),
                standing(),
                any::<u64>()
            )
                .prop_map(|(root, level2, standing, floor)| Message::Hello {
                    root,
                    level2,
                    standing,
                    floor,
                }),
            (standing(), any::<u64>())
                .prop_map(|(standing, floor)| Message::Standing { standing, floor }),
            (
                any::<u8>(),
                vec(any::<u32>(), 0..20),
                vec(any::<u64>(), 0..100)
            )
                .prop_map(|(level, parents, hashes)| Message::Nodes {
                    level,
                    parents,
                    hashes,
                }),
            (vec(any::<u16>(), 0..40), vec(any::<(u64, u64)>(), 0..60))
                .prop_map(|(leaves, entries)| Message::Entries { leaves, entries }),
            versions(8).prop_map(Message::Versions),
            (vec(any::<u64>(), 0..60), vec(any::<u64>(), 0..60))
                .prop_map(|(differing, lacking)| Message::Want { differing, lacking }),
            Just(Message::Done),
        ]
    }

    /// A changed copy of `bytes` (not empty): one of a flipped byte, a cut, a byte
    /// inserted or a byte removed, at `at`.
    pub(crate) fn mutate(bytes: &[u8], how: u8, at: usize, byte: u8) -> Vec<u8> {
        let mut out = bytes.to_vec();
        let at = at % out.len().max(1);
        match how % 4 {
            0 if !out.is_empty() => out[at] ^= byte.max(1),
            1 => out.truncate(at),
            2 => out.insert(at, byte),
            _ if !out.is_empty() => {
                out.remove(at);
            }
            _ => out.push(byte),
        }
        out
    }
}

/// Fuzz loops of the frame codec (run long with `PROPTEST_CASES`; see docs/fuzzing.md).
#[cfg(test)]
mod fuzz_tests {
    use proptest::prelude::*;

    use super::fuzz::{message, mutate};
    use super::*;

    /// What a decoded frame must satisfy: it encodes to a frame that decodes to it.
    fn assert_consistent(message: &Message) -> Result<(), TestCaseError> {
        prop_assert_eq!(decode(&encode(message)), Ok(message.clone()));
        Ok(())
    }

    proptest! {
        // proptest's default: 256 cases, or PROPTEST_CASES.

        #[test]
        fn fuzz_sync_frame_round_trips(message in message()) {
            let bytes = encode(&message);
            prop_assert!(!bytes.is_empty());
            prop_assert_eq!(decode(&bytes), Ok(message));
        }

        #[test]
        fn fuzz_sync_frame_garbage_is_refused_or_consistent(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            variant in 0u8..9,
            guided in any::<bool>(),
        ) {
            // Half the cases start like a frame of this version and some variant (7 and
            // 8 are unknown variants), so that the body decoders are reached.
            let bytes = if guided {
                let mut framed = vec![PROTOCOL, variant];
                framed.extend(bytes);
                framed
            } else {
                bytes
            };
            match decode(&bytes) {
                Ok(message) => assert_consistent(&message)?,
                Err(FrameError::Version(v)) => prop_assert_ne!(v, PROTOCOL),
                Err(FrameError::Malformed(_)) => {}
            }
        }

        #[test]
        fn fuzz_sync_frame_mutations_are_refused_or_consistent(
            message in message(),
            how in any::<u8>(),
            at in any::<usize>(),
            byte in any::<u8>(),
        ) {
            let good = encode(&message);
            let bad = mutate(&good, how, at, byte);
            match decode(&bad) {
                // A cut never decodes: the codec is self-delimiting and trailing bytes
                // are refused.
                Ok(_) if how % 4 == 1 => prop_assert!(false, "a cut to {} bytes decoded", bad.len()),
                Ok(decoded) => assert_consistent(&decoded)?,
                Err(_) => {}
            }
            for cut in [0, good.len() / 2, good.len() - 1] {
                prop_assert!(decode(&good[..cut]).is_err(), "cut at {}", cut);
            }
        }
    }
}
