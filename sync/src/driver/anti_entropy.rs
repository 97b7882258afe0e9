//! Anti-entropy over streams: one [`Session`] per round with one peer, each message a
//! frame, the store work off the async workers. The round loop picks a peer every
//! `sync_interval` (peers that missed pushes first, else at random) and at once when a
//! peer comes up, unless it is answering a session that peer opened (one session
//! carries both directions); the serving side answers sessions that peers open. When a
//! session that began a bulk load of the store fails or is dropped, the driver ends the
//! bulk load (a session that completes ends it itself). Each side tells its standing in
//! the session (see `standing.rs`), noted afresh before every round and every session
//! served, and often by a watch of its own, so that a node paused or cut off longer than
//! `tombstone_ttl` knows it is stale before it sends anything; a session it began before
//! becoming stale fails, even once complete.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kvs_net::{BiStream, Connection, StreamTransport};
use rand::Rng;
use tokio::sync::{mpsc, watch};

use super::peers::worth_a_warning;
use super::standing::Completed;
use super::{KIND_SYNC, Shared};
use crate::protocol::{Message, decode, encode};
use crate::{Session, SessionError, SessionStats, Standing, Store};

/// How long a peer may take to answer one message of a session.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the peer's first answer to a round may take to come: it is the peer's
/// standing, sent as the opening arrives, before any store work
/// ([`Session::early_standing`]), so a peer silent this long is cut off or gone (a
/// connection made before a cut still opens streams), and the round fails rather than
/// holding up the rounds with the other peers for [`REPLY_TIMEOUT`].
const OPENING_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a session may last, whichever side opened it. A peer that keeps sending
/// messages that end nothing (an empty `Versions` every few seconds) would otherwise
/// hold it for ever: the node's rounds run one at a time, and a node not yet
/// established takes part in no other session meanwhile. An honest session this long
/// is a bootstrap of a very large store; what it stored is kept, and the next round
/// takes up the rest.
const SESSION_LIMIT: Duration = Duration::from_secs(10 * 60);

/// Why a round failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RoundError {
    #[error(transparent)]
    Net(#[from] kvs_net::NetError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("bad frame: {0}")]
    Frame(#[from] crate::protocol::FrameError),
    #[error("the peer did not answer in time")]
    TimedOut,
    #[error("the session went on longer than {} s", SESSION_LIMIT.as_secs())]
    TooLong,
    #[error("the peer ended the session early")]
    Ended,
    #[error("the peer went down or restarted during the session")]
    PeerGone,
    #[error("the peer ended the session without saying its standing")]
    NoStanding,
    #[error("this node became stale during the session")]
    BecameStale,
    #[error("the session outlived tombstone_ttl")]
    Outlived,
}

/// How long after its start a session still takes the peer's messages: `tombstone_ttl`
/// less `max_clock_skew` (at least half of `tombstone_ttl`). What the peer sends is its
/// copy as it was when it read it, since the session started; past this, a key deleted
/// here since may have been purged here, and would come back. (Found by a chaos test of
/// real processes: a peer paused mid-session for longer than `tombstone_ttl` sent, as
/// it resumed, the rest of a bulk stream it had read before the pause, and the keys
/// deleted meanwhile came back.)
fn session_age_limit(config: &super::ReplicationConfig) -> u64 {
    let ttl = super::millis(config.tombstone_ttl);
    ttl.saturating_sub(super::millis(config.max_clock_skew))
        .max(ttl / 2)
}

/// Whether a session has a bulk load of the store under way ([`Session::bulk_loading`]),
/// as last seen between its steps: kept outside the session, so that the bulk load can
/// be ended when the session fails or is dropped.
#[derive(Default)]
struct BulkLoad(AtomicBool);

impl BulkLoad {
    fn note(&self, session: &Session) {
        self.0.store(session.bulk_loading(), Ordering::Relaxed);
    }

    /// Ends the bulk load a session left under way, if any
    /// ([`crate::Store::end_bulk_load`]).
    async fn end<T: StreamTransport>(&self, shared: &Arc<Shared<T>>) {
        if !self.0.swap(false, Ordering::Relaxed) {
            return;
        }
        let store = Arc::clone(&shared.store);
        if let Err(error) = shared.blocking(move || store.end_bulk_load()).await {
            tracing::warn!(%error, "ending the bulk load of a failed session failed");
        }
    }
}

/// Sends one message, counting its bytes.
async fn send_frame<T: StreamTransport, S: BiStream>(
    shared: &Arc<Shared<T>>,
    stream: &mut S,
    message: &Message,
) -> Result<(), RoundError> {
    let frame = encode(message);
    shared
        .counters
        .bytes_sent
        .fetch_add(frame.len() as u64, Ordering::Relaxed);
    stream.send_frame(&frame).await?;
    Ok(())
}

/// Sends `out` and the rest of this side's turn.
async fn send_turn<T: StreamTransport, S: BiStream>(
    shared: &Arc<Shared<T>>,
    stream: &mut S,
    mut session: Session,
    mut out: Vec<Message>,
    bulk: &BulkLoad,
) -> Result<Session, RoundError> {
    loop {
        for message in out.drain(..) {
            send_frame(shared, stream, &message).await?;
        }
        if !session.has_output() {
            return Ok(session);
        }
        let store = Arc::clone(&shared.store);
        let (back, more) = shared
            .blocking(move || {
                let more = session.poll_output(store.as_ref());
                Ok((session, more))
            })
            .await
            .map_err(SessionError::Store)?;
        session = back;
        bulk.note(&session);
        out = more?;
    }
}

/// Runs `session` (and its first messages `out`) over `stream` until it is done, noting
/// its bulk load in `bulk`. Returns the round trips it waited for.
async fn converse<T: StreamTransport, S: BiStream>(
    shared: &Arc<Shared<T>>,
    stream: &mut S,
    (mut session, started_ms): (Session, u64),
    mut out: Vec<Message>,
    bulk: &BulkLoad,
) -> Result<(Session, u64), RoundError> {
    let (mut round_trips, mut first) = (0, session.is_initiator());
    let mut reported = Reported::from(started_ms);
    let began_stale = shared.stale_since().is_some();
    let taken_until = started_ms.saturating_add(session_age_limit(&shared.config));
    loop {
        let sent = !out.is_empty() || session.has_output();
        session = send_turn(shared, stream, session, out, bulk).await?;
        report_progress(shared, &session, &mut reported);
        if session.is_done() {
            return Ok((session, round_trips));
        }
        let wait = match first {
            true => OPENING_TIMEOUT,
            false => REPLY_TIMEOUT,
        };
        first = false;
        round_trips += u64::from(sent);
        let frame = kvs_net::timeout(shared.runtime.as_ref(), wait, stream.recv_frame())
            .await
            .ok_or(RoundError::TimedOut)??
            .ok_or(RoundError::Ended)?;
        shared.note_staleness();
        if !began_stale && shared.stale_since().is_some() {
            // Paused mid-session longer than tombstone_ttl: what this side sends next
            // would go out under a standing it no longer has.
            return Err(RoundError::BecameStale);
        }
        if shared.now_ms() >= taken_until {
            return Err(RoundError::Outlived);
        }
        shared
            .counters
            .bytes_received
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        let message = decode(&frame)?;
        if let Some(standing) = session.early_standing() {
            send_frame(shared, stream, &standing).await?;
        }
        let (store, now) = (Arc::clone(&shared.store), shared.now_ms());
        let (back, replies) = shared
            .blocking(move || {
                let replies = session.handle(message, store.as_ref(), now);
                Ok((session, replies))
            })
            .await
            .map_err(SessionError::Store)?;
        session = back;
        bulk.note(&session);
        out = replies?;
        report_progress(shared, &session, &mut reported);
    }
}

/// `conversation`, ended as [`RoundError::TooLong`] once it has run [`SESSION_LIMIT`].
async fn limited<T: StreamTransport, R>(
    shared: &Arc<Shared<T>>,
    conversation: impl Future<Output = Result<R, RoundError>>,
) -> Result<R, RoundError> {
    kvs_net::timeout(shared.runtime.as_ref(), SESSION_LIMIT, conversation)
        .await
        .ok_or(RoundError::TooLong)?
}

/// How often a session that keeps storing versions (a bootstrap, a long catch-up) logs
/// its progress.
const PROGRESS_EVERY_MS: u64 = 5_000;

/// What a session has reported so far: its figures as added to the counters, and its
/// last progress line (when, and the versions stored by then).
struct Reported {
    stats: SessionStats,
    logged_ms: u64,
    logged_stored: u64,
}

impl Reported {
    fn from(started_ms: u64) -> Self {
        Self {
            stats: SessionStats::default(),
            logged_ms: started_ms,
            logged_stored: 0,
        }
    }

    /// Whether a progress line is due at `now_ms` with the session at `stats`: at least
    /// [`PROGRESS_EVERY_MS`] after the last one (or the start) and versions stored since;
    /// then notes it, and gives the versions stored per second since the last one.
    fn progress_due(&mut self, stats: &SessionStats, now_ms: u64) -> Option<u64> {
        let since_ms = now_ms.saturating_sub(self.logged_ms);
        if since_ms < PROGRESS_EVERY_MS || stats.versions_stored <= self.logged_stored {
            return None;
        }
        let per_second = (stats.versions_stored - self.logged_stored) * 1000 / since_ms;
        self.logged_ms = now_ms;
        self.logged_stored = stats.versions_stored;
        Some(per_second)
    }
}

/// Adds what `session` did since `reported` to the counters (so that `/metrics` shows a
/// long session's progress as it goes) and, every [`PROGRESS_EVERY_MS`] while it stores
/// versions, logs how far it is and how fast it goes (the span names the peer).
fn report_progress<T: StreamTransport>(
    shared: &Shared<T>,
    session: &Session,
    reported: &mut Reported,
) {
    let now = session.stats();
    shared.counters.session_delta(&reported.stats, &now);
    reported.stats = now;
    if let Some(per_second) = reported.progress_due(&now, shared.now_ms()) {
        tracing::info!(
            stored = now.versions_stored,
            received = now.versions_received,
            sent = now.versions_sent,
            per_second,
            "sync progress: {} versions stored so far, {per_second}/s",
            now.versions_stored
        );
    }
}

/// A completed session that stored at least this many versions is logged (besides a
/// node's first since it started): a node back from an absence, or a healed partition.
const CATCH_UP_LOGGED_FROM: u64 = 1_000;

/// Tells the driver that `session` (with `node_id`, if known) completed as `done`, then
/// logs what it brought where an operator follows a catch-up: a node's first complete
/// session since it started, or one that stored at least [`CATCH_UP_LOGGED_FROM`]
/// versions.
fn complete<T: StreamTransport>(
    shared: &Shared<T>,
    node_id: Option<&str>,
    session: &Session,
    done: Completed,
) -> Result<(), RoundError> {
    let started_ms = done.started_ms;
    let synced_before = shared.synced_since_start();
    shared.completed(node_id, done)?;
    let first = !synced_before && shared.synced_since_start();
    let stats = session.stats();
    if first || stats.versions_stored >= CATCH_UP_LOGGED_FROM {
        tracing::info!(
            node_id = node_id.unwrap_or("?"),
            received = stats.versions_received,
            stored = stats.versions_stored,
            sent = stats.versions_sent,
            took_ms = shared.now_ms().saturating_sub(started_ms),
            "{}",
            match first {
                true => "first sync with a peer complete",
                false => "sync session complete",
            }
        );
    }
    Ok(())
}

/// One round with the peer at `addr`, this node opening the session (its bulk load noted
/// in `bulk`).
async fn run_round<T: StreamTransport>(
    shared: &Arc<Shared<T>>,
    node_id: &str,
    addr: std::net::SocketAddr,
    bulk: &BulkLoad,
) -> Result<(), RoundError> {
    let _running = shared.sessions.initiate(node_id);
    let connection = match shared.connection(addr).await {
        Ok(connection) => connection,
        Err(error) => {
            shared.forget_connection(addr);
            return Err(error.into());
        }
    };
    let mut stream = match connection.open_stream().await {
        Ok(stream) => stream,
        Err(error) => {
            shared.forget_connection(addr);
            return Err(error.into());
        }
    };
    stream.send_frame(KIND_SYNC).await?;
    let (store, rules) = (Arc::clone(&shared.store), shared.admission());
    let (started, standing, floor) = (rules.now_ms, shared.standing(), shared.floor());
    let writer = shared.writer();
    let (session, opening, own_writes_before) = shared
        .blocking(move || {
            let mut session = Session::initiator(rules)
                .with_standing(standing)
                .with_floor(floor);
            if let Some((origin, delivered)) = writer {
                session = session.writing_as(origin, delivered);
            }
            let own_writes_before = settled_before(store.as_ref(), started);
            let opening = session.start(store.as_ref());
            Ok((session, opening, own_writes_before))
        })
        .await
        .map_err(SessionError::Store)?;
    // A peer silent past the opening's wait fails the round; its connection stays (it
    // may still carry this node's pushes one way) until the transport gives it up.
    let (session, round_trips) = limited(
        shared,
        converse(shared, &mut stream, (session, started), opening?, bulk),
    )
    .await?;
    let _ = stream.finish();
    shared
        .counters
        .round_trips
        .fetch_add(round_trips, Ordering::Relaxed);
    let peer = session.peer_standing().ok_or(RoundError::NoStanding)?;
    let start = (started, own_writes_before);
    complete(
        shared,
        Some(node_id),
        &session,
        completed(&session, start, peer, standing),
    )?;
    tracing::debug!(%node_id, round_trips, stats = ?session.stats(), "sync round done");
    Ok(())
}

/// The time before which this node's own writes are all in `store`'s view, for a
/// session that starts at `started_ms` and reads the store after this call: writes
/// stamped before it that are still being made durable are not (see
/// [`crate::Store::unsettled_since`]). (Found by a review of the simulator, whose writes
/// are durable the instant they are stamped: a session that began while a write was in
/// its group commit did not carry it but counted it as delivered, and a lost push then
/// left the node, back stale after `tombstone_ttl`, burying its own acknowledged write.)
fn settled_before(store: &dyn Store, started_ms: u64) -> u64 {
    store
        .unsettled_since()
        .map_or(started_ms, |since| since.min(started_ms))
}

/// What `session`, started at `start` (its time, and the time before which this node's
/// own writes were in the store's view then: [`settled_before`]) with a peer of
/// standing `peer`, this node's being `own`, tells the driver once complete.
fn completed(
    session: &Session,
    (started_ms, own_writes_before): (u64, u64),
    peer: Standing,
    own: Standing,
) -> Completed {
    Completed {
        started_ms,
        own_writes_before,
        found_equal: session.stats().found_equal(),
        peer,
        peer_floor: session.peer_floor(),
        began_stale: matches!(own, Standing::Stale { .. }),
    }
}

/// Answers a session a peer opened on `stream`.
pub(crate) async fn serve<T: StreamTransport>(
    shared: Arc<Shared<T>>,
    mut stream: <T::Conn as Connection>::Stream,
    from: std::net::SocketAddr,
) {
    shared.note_staleness();
    let peer = shared.peer_at(from);
    if peer
        .as_deref()
        .is_some_and(|id| shared.sessions.crosses_own_round(id))
    {
        // Both opened a session at once (as when each sees the other come up): one is
        // enough, since a session carries both directions.
        tracing::debug!(%from, "refused a session that crosses this node's own round");
        return;
    }
    let answering = shared
        .sessions
        .answer(from, peer.as_deref(), !shared.established());
    let Some(_answering) = answering else {
        tracing::debug!(%from, "refused a session: this node is not established and in one already");
        return;
    };
    let (rules, own) = (shared.admission(), shared.standing());
    let mut session = Session::responder(rules)
        .with_standing(own)
        .with_floor(shared.floor());
    if let Some((origin, delivered)) = shared.writer() {
        session = session.writing_as(origin, delivered);
    }
    let (store, started) = (Arc::clone(&shared.store), rules.now_ms);
    // A store task that failed credits nothing.
    let own_writes_before = shared
        .blocking(move || Ok(settled_before(store.as_ref(), started)))
        .await
        .unwrap_or(0);
    let start = (started, own_writes_before);
    let bulk = BulkLoad::default();
    let conversation = limited(
        &shared,
        converse(&shared, &mut stream, (session, started), Vec::new(), &bulk),
    );
    // As for a round: a peer that dies mid-session never answers, and a node not yet
    // established would refuse every other session until the reply timeout.
    let conversed = tokio::select! {
        biased;
        conversed = conversation => conversed,
        () = shared.peer_at_gone(from) => Err(RoundError::PeerGone),
    };
    let served = conversed.and_then(|(session, _)| {
        let _ = stream.finish();
        match session.peer_standing() {
            // Membership may name the peer only now (it opened at once on seeing this
            // node come up); an unnamed peer still counts for this node's standing.
            Some(standing) => complete(
                &shared,
                peer.or_else(|| shared.peer_at(from)).as_deref(),
                &session,
                completed(&session, start, standing, own),
            ),
            None => Ok(()),
        }
    });
    if let Err(error) = served {
        shared.counters.round_failed();
        tracing::debug!(%from, %error, "serving a sync session failed");
        bulk.end(&shared).await;
    }
}

/// How often a node checks whether it has been out of touch longer than
/// `tombstone_ttl` ([`Shared::note_staleness`]), at most.
const STALENESS_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Notes until shutdown, often, whether this node is in touch with a peer: a pause or a
/// long spell without live peers shows as a gap (see [`Shared::note_staleness`]).
pub(crate) async fn staleness_watch<T: StreamTransport>(
    shared: Arc<Shared<T>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = STALENESS_CHECK_EVERY
        .min(shared.config.tombstone_ttl / 4)
        .max(Duration::from_millis(10));
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => return,
            () = shared.runtime.sleep(every) => shared.note_staleness(),
        }
    }
}

/// Runs rounds until shutdown: every `sync_interval` (jittered by up to a quarter) with
/// a peer that missed pushes or a random one (after a failed round, one whose rounds do
/// not fail, if any), and at once with each peer named on `wake`.
pub(crate) async fn round_loop<T: StreamTransport>(
    shared: Arc<Shared<T>>,
    mut wake: mpsc::UnboundedReceiver<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut rng = kvs_net::seeded_rng(shared.config.seed, "sync peers");
    let mut last_failed = false;
    loop {
        let interval = shared.config.sync_interval;
        let jitter = rng.gen_range(0..=interval.as_millis() as u64 / 4);
        let sleep = interval.saturating_sub(Duration::from_millis(jitter));
        let chosen = tokio::select! {
            biased;
            _ = shared.runtime.sleep(sleep) => shared.pick_peer(&mut rng, last_failed),
            woken = wake.recv() => match woken {
                Some(node_id) => shared.peer_addr(&node_id).map(|addr| (node_id, addr)),
                None => return,
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        shared.note_staleness();
        let Some((node_id, addr)) = chosen else {
            continue;
        };
        if let Some(why) = shared.sessions.no_round_with(addr, !shared.established()) {
            tracing::debug!(%node_id, why, "no round");
            continue;
        }
        let span = tracing::info_span!("sync round", peer = %node_id, %addr);
        let generation = shared.peer_generation(&node_id);
        let bulk = BulkLoad::default();
        let round =
            tracing::Instrument::instrument(run_round(&shared, &node_id, addr, &bulk), span);
        // A peer that crashes mid-session never answers: without this, its partner's
        // rounds would all wait for the reply timeout (found by the simulator's nemesis).
        let round = tokio::select! {
            biased;
            round = round => round,
            () = shared.peer_gone(&node_id, generation) => Err(RoundError::PeerGone),
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let failed_in_a_row = shared.note_round(&node_id, round.is_ok());
        last_failed = round.is_err();
        if let Err(error) = round {
            shared.counters.round_failed();
            if worth_a_warning(failed_in_a_row) {
                tracing::warn!(%node_id, %error, failed_in_a_row, "sync rounds with this peer keep failing");
            } else {
                tracing::debug!(%node_id, %error, "sync round failed");
            }
        }
        bulk.end(&shared).await;
    }
}

#[cfg(test)]
mod tests {
    use super::{PROGRESS_EVERY_MS, Reported, SessionStats};

    fn stored(versions_stored: u64) -> SessionStats {
        SessionStats {
            versions_stored,
            ..SessionStats::default()
        }
    }

    /// A long catch-up logs its progress every few seconds with its rate, whatever its
    /// size (it logged every 100,000 versions: once in an 18 s bootstrap of 150,000, and
    /// never in a shorter one), and nothing while it stores nothing.
    #[test]
    fn progress_is_logged_by_time_while_versions_are_stored() {
        let mut reported = Reported::from(1_000);
        assert_eq!(reported.progress_due(&stored(40_000), 1_000 + 4_999), None);
        let first = 1_000 + PROGRESS_EVERY_MS;
        assert_eq!(reported.progress_due(&stored(50_000), first), Some(10_000));
        assert_eq!(reported.progress_due(&stored(60_000), first + 1_000), None);
        let second = first + 2 * PROGRESS_EVERY_MS;
        assert_eq!(reported.progress_due(&stored(60_000), second), Some(1_000));
        // Stalled: nothing stored since the last line, no line.
        let later = second + 3 * PROGRESS_EVERY_MS;
        assert_eq!(reported.progress_due(&stored(60_000), later), None);
        assert_eq!(reported.progress_due(&stored(60_500), later), Some(33));
    }
}
