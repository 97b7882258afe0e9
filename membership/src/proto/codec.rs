//! The SWIM wire format, the only place that knows how bytes look.
//!
//! A datagram is `[PROTOCOL_VERSION][header][update]*`: one version byte, a bincode-2
//! (standard config: varints, little endian) [`Header`] naming the sender and the message,
//! then zero or more [`Update`]s until the end of the datagram. Updates are encoded one by
//! one, so that the dissemination queue caches their bytes and packs them to the byte
//! budget exactly. Decoding is bounded ([`DECODE_LIMIT`]) and never panics on garbage.

use std::net::SocketAddr;

use bincode::config::{Config, standard};
use kvs_net::NodeId;
use serde::{Deserialize, Serialize};

/// Version of this wire format; a datagram with another first byte is dropped.
pub(crate) const PROTOCOL_VERSION: u8 = 1;

/// Upper bound on the bytes one decode may claim (far above any datagram).
const DECODE_LIMIT: usize = 64 * 1024;

fn config() -> impl Config {
    standard().with_limit::<DECODE_LIMIT>()
}

/// The fixed part of every datagram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Header {
    /// Identity of the node that sent the datagram.
    pub(crate) sender: NodeId,
    /// What the datagram asks or answers.
    pub(crate) msg: Message,
}

/// The protocol message of a datagram; updates ride behind it whatever it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Message {
    /// Direct probe; `target` is the [`fingerprint`] of the probed id, which guards
    /// against a reused address at 4 bytes instead of a whole id.
    Ping { seq: u32, target: u32 },
    /// Answer to a ping, or an indirect ack forwarded by a relay.
    Ack { seq: u32 },
    /// A relay's "I asked, the target did not answer in time" (Lifeguard).
    Nack { seq: u32 },
    /// Ask the receiver to ping `target` on the sender's behalf.
    PingReq {
        seq: u32,
        target: NodeId,
        target_addr: SocketAddr,
    },
    /// One chunk of a full-state exchange; the updates are the sender's member list.
    /// `reply` asks the receiver to send its own list back.
    PushPull { exchange: u32, reply: bool },
    /// Nothing but piggy-backed updates.
    Gossip,
}

/// What a member's state is said to be, with the evidence the rules need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    /// Alive at this incarnation.
    Alive,
    /// Suspected by `from`.
    Suspect { from: NodeId },
    /// Declared dead by `from`.
    Dead { from: NodeId },
    /// Left gracefully.
    Left,
}

/// One membership fact, disseminated by gossip or sent in a push-pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Update {
    pub(crate) id: NodeId,
    pub(crate) incarnation: u64,
    pub(crate) addr: SocketAddr,
    pub(crate) meta: Vec<u8>,
    pub(crate) joined_at: u64,
    pub(crate) kind: Kind,
}

/// A decoded datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Packet {
    pub(crate) header: Header,
    pub(crate) updates: Vec<Update>,
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Empty, or a first byte other than [`PROTOCOL_VERSION`].
    Version,
    /// The rest does not decode.
    Malformed,
}

/// A 32-bit FNV-1a hash of a member id, carried by pings in place of the id.
pub(crate) fn fingerprint(id: &NodeId) -> u32 {
    id.as_str().bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Encodes the version byte and the header: the start of a datagram.
pub(crate) fn encode_header(header: &Header) -> Vec<u8> {
    let mut out = vec![PROTOCOL_VERSION];
    out.extend(encode(header));
    out
}

/// Encodes one update, to be appended after a header.
pub(crate) fn encode_update(update: &Update) -> Vec<u8> {
    encode(update)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain structs into a Vec cannot fail (no I/O, no unsupported types).
    bincode::serde::encode_to_vec(value, config()).expect("in-memory encoding")
}

/// Decodes a whole datagram.
pub(crate) fn decode(bytes: &[u8]) -> Result<Packet, DecodeError> {
    let (&version, mut rest) = bytes.split_first().ok_or(DecodeError::Version)?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::Version);
    }
    let header: Header = decode_one(&mut rest)?;
    let mut updates = Vec::new();
    while !rest.is_empty() {
        updates.push(decode_one(&mut rest)?);
    }
    Ok(Packet { header, updates })
}

fn decode_one<T: serde::de::DeserializeOwned>(rest: &mut &[u8]) -> Result<T, DecodeError> {
    let (value, used) =
        bincode::serde::decode_from_slice(rest, config()).map_err(|_| DecodeError::Malformed)?;
    *rest = rest.get(used..).ok_or(DecodeError::Malformed)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node_id() -> impl Strategy<Value = NodeId> {
        "[a-z0-9-]{0,40}".prop_map(|s| NodeId::new(s.as_str()))
    }

    fn addr() -> impl Strategy<Value = SocketAddr> {
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port)))
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<u32>(), any::<u32>()).prop_map(|(seq, target)| Message::Ping { seq, target }),
            any::<u32>().prop_map(|seq| Message::Ack { seq }),
            any::<u32>().prop_map(|seq| Message::Nack { seq }),
            (any::<u32>(), node_id(), addr()).prop_map(|(seq, target, target_addr)| {
                Message::PingReq {
                    seq,
                    target,
                    target_addr,
                }
            }),
            (any::<u32>(), any::<bool>())
                .prop_map(|(exchange, reply)| Message::PushPull { exchange, reply }),
            Just(Message::Gossip),
        ]
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Alive),
            node_id().prop_map(|from| Kind::Suspect { from }),
            node_id().prop_map(|from| Kind::Dead { from }),
            Just(Kind::Left),
        ]
    }

    fn update() -> impl Strategy<Value = Update> {
        let meta = proptest::collection::vec(any::<u8>(), 0..40);
        (node_id(), any::<u64>(), addr(), meta, any::<u64>(), kind()).prop_map(
            |(id, incarnation, addr, meta, joined_at, kind)| Update {
                id,
                incarnation,
                addr,
                meta,
                joined_at,
                kind,
            },
        )
    }

    fn packet() -> impl Strategy<Value = Packet> {
        let updates = proptest::collection::vec(update(), 0..8);
        (node_id(), message(), updates).prop_map(|(sender, msg, updates)| Packet {
            header: Header { sender, msg },
            updates,
        })
    }

    fn encode_packet(p: &Packet) -> Vec<u8> {
        let mut out = encode_header(&p.header);
        for u in &p.updates {
            out.extend(encode_update(u));
        }
        out
    }

    proptest! {
        #[test]
        fn fuzz_swim_roundtrip(p in packet()) {
            prop_assert_eq!(decode(&encode_packet(&p)), Ok(p));
        }

        #[test]
        fn fuzz_swim_garbage_of_another_version_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            if bytes.first() != Some(&PROTOCOL_VERSION) {
                prop_assert_eq!(decode(&bytes), Err(DecodeError::Version));
            }
        }

        #[test]
        fn fuzz_swim_versioned_garbage_is_refused_or_a_packet_that_round_trips(
            bytes in proptest::collection::vec(any::<u8>(), 0..1500),
        ) {
            let mut data = vec![PROTOCOL_VERSION];
            data.extend(bytes);
            match decode(&data) {
                Ok(p) => prop_assert_eq!(decode(&encode_packet(&p)), Ok(p)),
                Err(e) => prop_assert_eq!(e, DecodeError::Malformed),
            }
        }

        #[test]
        fn fuzz_swim_a_truncated_packet_decodes_only_at_an_update_boundary(p in packet(), cut in any::<usize>()) {
            let bytes = encode_packet(&p);
            let cut = cut % (bytes.len() + 1);
            // Where each prefix of whole updates ends.
            let mut ends = vec![encode_header(&p.header).len()];
            for u in &p.updates {
                ends.push(ends[ends.len() - 1] + encode_update(u).len());
            }
            match ends.iter().position(|&end| end == cut) {
                Some(n) => {
                    let prefix = Packet { header: p.header.clone(), updates: p.updates[..n].to_vec() };
                    prop_assert_eq!(decode(&bytes[..cut]), Ok(prefix));
                }
                None => prop_assert!(decode(&bytes[..cut]).is_err(), "cut at {} of {}", cut, bytes.len()),
            }
        }

        #[test]
        fn fuzz_swim_a_changed_byte_never_decodes_to_the_original(
            p in packet(),
            at in any::<usize>(),
            flip in 1u8..=255,
        ) {
            let mut bytes = encode_packet(&p);
            let at = at % bytes.len();
            bytes[at] ^= flip;
            let decoded = decode(&bytes);
            if at == 0 {
                prop_assert_eq!(decoded, Err(DecodeError::Version));
            } else {
                prop_assert_ne!(decoded, Ok(p));
            }
        }
    }

    #[test]
    fn fingerprint_is_fnv1a() {
        assert_eq!(fingerprint(&NodeId::from("")), 0x811c_9dc5);
        assert_eq!(fingerprint(&NodeId::from("a")), 0xe40c_292c);
    }

    #[test]
    fn other_version_is_rejected() {
        let p = Header {
            sender: NodeId::from("a"),
            msg: Message::Gossip,
        };
        let mut bytes = encode_header(&p);
        bytes[0] = PROTOCOL_VERSION + 1;
        assert_eq!(decode(&bytes), Err(DecodeError::Version));
        assert_eq!(decode(&[]), Err(DecodeError::Version));
    }
}
