//! Whole sessions between two stores in one process: every message through the codec, in
//! the same turns as over a stream. For tests, benchmarks and the simulator.

use super::{Session, SessionError, SessionStats, protocol};
use crate::protocol::Message;
use crate::{Admission, Store};

/// What a session between two local stores exchanged (see [`exchange_locally`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exchange {
    /// Round trips: times the initiator waited for the responder.
    pub round_trips: u64,
    /// Frame bytes from initiator to responder.
    pub bytes_out: u64,
    /// Frame bytes from responder to initiator.
    pub bytes_in: u64,
    /// The initiator's side.
    pub initiator: SessionStats,
    /// The responder's side.
    pub responder: SessionStats,
}

/// One turn of `me`: `first` and then whatever it has to send, each message through the
/// codec and into `peer` (whose clock reads `now_ms`); returns the peer's replies (the
/// start of its turn).
fn take_turn(
    me: &mut Session,
    my_store: &dyn Store,
    first: Vec<Message>,
    peer: &mut Session,
    peer_store: &dyn Store,
    bytes: &mut u64,
    now_ms: u64,
) -> Result<Vec<Message>, SessionError> {
    use crate::protocol::{decode, encode};
    let mut replies = Vec::new();
    let mut outgoing = first;
    loop {
        for message in outgoing.drain(..) {
            let frame = encode(&message);
            *bytes += frame.len() as u64;
            // As a stream transport refuses it.
            if frame.len() > crate::protocol::MAX_MESSAGE_BYTES {
                return Err(protocol(format!("a {} byte message", frame.len())));
            }
            let message = decode(&frame).map_err(|e| protocol(e.to_string()))?;
            // As the driver does: a responder tells its standing before any store work.
            replies.extend(peer.early_standing());
            replies.extend(peer.handle(message, peer_store, now_ms)?);
        }
        if !me.has_output() {
            return Ok(replies);
        }
        outgoing = me.poll_output(my_store)?;
    }
}

/// Runs one whole session between two stores in this process, every message through the
/// codec, in the same turns as over a stream: for tests, benchmarks and the simulator.
pub fn exchange_locally(
    initiator: &dyn Store,
    responder: &dyn Store,
    rules: Admission,
) -> Result<Exchange, SessionError> {
    let sessions = (Session::initiator(rules), Session::responder(rules));
    exchange_with(sessions, initiator, responder, (rules.now_ms, rules.now_ms))
}

/// [`exchange_locally`] with sessions made by the caller (e.g. [`Session::with_standing`])
/// and each side's clock: `(initiator, responder)` Unix ms, which may differ (skew).
pub fn exchange_with(
    (mut i, mut r): (Session, Session),
    initiator: &dyn Store,
    responder: &dyn Store,
    (initiator_now, responder_now): (u64, u64),
) -> Result<Exchange, SessionError> {
    let mut exchange = Exchange::default();
    let opening = i.start(initiator)?;
    let mut replies = take_turn(
        &mut i,
        initiator,
        opening,
        &mut r,
        responder,
        &mut exchange.bytes_out,
        responder_now,
    )?;
    while !(i.is_done() && r.is_done()) {
        if replies.is_empty() && !r.has_output() {
            return Err(protocol("the responder stalled"));
        }
        exchange.round_trips += 1;
        let back = take_turn(
            &mut r,
            responder,
            replies,
            &mut i,
            initiator,
            &mut exchange.bytes_in,
            initiator_now,
        )?;
        if i.is_done() && r.is_done() {
            break;
        }
        if back.is_empty() && !i.has_output() {
            return Err(protocol("the initiator stalled"));
        }
        replies = take_turn(
            &mut i,
            initiator,
            back,
            &mut r,
            responder,
            &mut exchange.bytes_out,
            responder_now,
        )?;
    }
    exchange.initiator = i.stats();
    exchange.responder = r.stats();
    Ok(exchange)
}
