//! Simulated reliable streams: [`kvs_net::StreamTransport`] on virtual time. Frames take
//! the link's latency, keep their order, wait out partitions (retried every 100 ms) and
//! break the stream after 10 s without progress, as QUIC's idle timeout would. A
//! connection belongs to one life of each node: once either crashed, its frames no longer
//! arrive (even after a restart) and its streams break the same way. Closing a connection
//! breaks its streams at once on both ends (the peer would learn of it one latency later
//! from QUIC's close frame; the simulation does not model that delay).

use std::collections::{BTreeMap, VecDeque};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use kvs_net::{BiStream, Connection, NetError, StreamTransport};

use super::core::{Core, Frame, STREAM_TIMEOUT, lock};
use super::runtime::Sleep;
use crate::protocol::{addr_index, node_addr};

/// One direction of a stream.
#[derive(Default)]
pub(crate) struct Pipe {
    next_send: u64,
    next_deliver: u64,
    last_at: Duration,
    arrived: BTreeMap<u64, Option<Vec<u8>>>,
    ready: VecDeque<Option<Vec<u8>>>,
    waker: Option<Waker>,
    broken: Option<Broken>,
    ended: bool,
}

/// Why a stream broke.
#[derive(Clone, Copy)]
pub(crate) enum Broken {
    /// No progress for [`STREAM_TIMEOUT`], as QUIC's idle timeout.
    TimedOut,
    /// Either end closed the connection.
    Closed,
}

impl Broken {
    fn error(self) -> NetError {
        match self {
            Self::TimedOut => NetError::Connection("stream timed out".into()),
            Self::Closed => NetError::Closed,
        }
    }
}

impl Pipe {
    /// A clog that held this pipe's frames was healed at `now`: frames sent from now on
    /// are due from now, not from the clog's end.
    pub(crate) fn released(&mut self, now: Duration) {
        self.last_at = self.last_at.min(now);
    }

    /// A frame arrived; frames are handed over in sending order.
    pub(crate) fn arrive(&mut self, seq: u64, data: Option<Vec<u8>>) {
        if seq == self.next_deliver && self.arrived.is_empty() {
            // In order, the common case: no map node to allocate and free.
            self.ready.push_back(data);
            self.next_deliver += 1;
            self.wake();
            return;
        }
        self.arrived.insert(seq, data);
        while let Some(data) = self.arrived.remove(&self.next_deliver) {
            self.ready.push_back(data);
            self.next_deliver += 1;
        }
        self.wake();
    }

    /// The stream broke: its frames fail from now on.
    pub(crate) fn break_off(&mut self, why: Broken) {
        self.broken = Some(why);
        self.wake();
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// Streams the peer opened, waiting for `accept_stream`.
#[derive(Default)]
struct Incoming {
    streams: VecDeque<SimStream>,
    waker: Option<Waker>,
}

/// What the two ends of a connection share: whether either closed it, and the pipes of
/// the streams opened on it (a close breaks them).
#[derive(Default)]
struct ConnectionState {
    closed: bool,
    pipes: Vec<Weak<Mutex<Pipe>>>,
    /// How many pipes may be noted before those of dropped streams are forgotten.
    forget_at: usize,
}

impl ConnectionState {
    /// Notes a new stream's pipes, forgetting those of streams both ends dropped now and
    /// then (a connection may carry a stream per sync round for a whole run).
    fn add_stream(&mut self, pipes: [&Arc<Mutex<Pipe>>; 2]) {
        if self.pipes.len() >= self.forget_at {
            self.pipes.retain(|pipe| pipe.strong_count() > 0);
            self.forget_at = (2 * self.pipes.len()).max(64);
        }
        self.pipes.extend(pipes.map(Arc::downgrade));
    }
}

/// A simulated connection between two nodes.
#[derive(Clone)]
pub struct SimConnection {
    core: Arc<Mutex<Core>>,
    local: usize,
    remote: usize,
    /// The lives of `local` and `remote` when the connection was made.
    local_life: u64,
    remote_life: u64,
    incoming: Arc<Mutex<Incoming>>,
    peer_incoming: Arc<Mutex<Incoming>>,
    state: Arc<Mutex<ConnectionState>>,
}

/// A simulated bidirectional stream.
pub struct SimStream {
    core: Arc<Mutex<Core>>,
    from: usize,
    to: usize,
    /// The lives of `from` and `to` the connection was made with.
    lives: (u64, u64),
    tx: Arc<Mutex<Pipe>>,
    rx: Arc<Mutex<Pipe>>,
    /// Whether our side is finished (dropping an unfinished stream finishes it, as
    /// quinn does).
    finished: bool,
}

/// A node's stream transport.
#[derive(Clone)]
pub struct SimStreams {
    pub(crate) core: Arc<Mutex<Core>>,
    pub(crate) node: usize,
}

/// The two ends of a new connection `a` -> `b`, made with the lives `lives` of `a`
/// and `b`.
fn connection_pair(
    core: &Arc<Mutex<Core>>,
    (a, b): (usize, usize),
    lives: (u64, u64),
) -> (SimConnection, SimConnection) {
    let (ia, ib) = (
        Arc::new(Mutex::new(Incoming::default())),
        Arc::new(Mutex::new(Incoming::default())),
    );
    let state = Arc::new(Mutex::new(ConnectionState::default()));
    let end = |(local, local_life),
               (remote, remote_life),
               incoming: &Arc<Mutex<Incoming>>,
               peer: &Arc<Mutex<Incoming>>| {
        SimConnection {
            core: Arc::clone(core),
            local,
            remote,
            local_life,
            remote_life,
            incoming: Arc::clone(incoming),
            peer_incoming: Arc::clone(peer),
            state: Arc::clone(&state),
        }
    };
    (
        end((a, lives.0), (b, lives.1), &ia, &ib),
        end((b, lives.1), (a, lives.0), &ib, &ia),
    )
}

impl StreamTransport for SimStreams {
    type Conn = SimConnection;

    /// Connects after a handshake round trip; fails after 10 s if the peer stays
    /// unreachable.
    async fn connect(&self, to: SocketAddr) -> Result<SimConnection, NetError> {
        let n = lock(&self.core).up.len();
        let to =
            addr_index(to, n).ok_or_else(|| NetError::Connection(format!("no node at {to}")))?;
        let started = lock(&self.core).now;
        loop {
            let until = {
                let mut c = lock(&self.core);
                let now = c.now;
                let there = c.fabric.stream_arrival(now, self.node, to).0;
                c.fabric.stream_arrival(there, to, self.node).0
            };
            Sleep::new(Arc::clone(&self.core), until).await;
            let retry = {
                let mut c = lock(&self.core);
                if c.reachable(self.node, to) && c.reachable(to, self.node) {
                    let lives = (c.lives[self.node], c.lives[to]);
                    let (local, remote) = connection_pair(&self.core, (self.node, to), lives);
                    let mailbox = &mut c.mailboxes[to];
                    mailbox.connections.push_back(remote);
                    if let Some(w) = mailbox.connection_waker.take() {
                        w.wake();
                    }
                    return Ok(local);
                }
                if c.now.saturating_sub(started) >= STREAM_TIMEOUT {
                    return Err(NetError::TimedOut);
                }
                c.now + Duration::from_millis(200)
            };
            Sleep::new(Arc::clone(&self.core), retry).await;
        }
    }

    async fn accept(&self) -> Result<SimConnection, NetError> {
        poll_fn(|cx| {
            let mut c = lock(&self.core);
            let mailbox = &mut c.mailboxes[self.node];
            match mailbox.connections.pop_front() {
                Some(conn) => Poll::Ready(Ok(conn)),
                None => {
                    mailbox.connection_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    fn local_addr(&self) -> Result<SocketAddr, NetError> {
        Ok(node_addr(self.node))
    }
}

impl Connection for SimConnection {
    type Stream = SimStream;

    fn remote_addr(&self) -> SocketAddr {
        node_addr(self.remote)
    }

    async fn open_stream(&self) -> Result<SimStream, NetError> {
        let (ab, ba) = (
            Arc::new(Mutex::new(Pipe::default())),
            Arc::new(Mutex::new(Pipe::default())),
        );
        {
            let mut state = lock(&self.state);
            if state.closed {
                return Err(NetError::Closed);
            }
            state.add_stream([&ab, &ba]);
        }
        let stream =
            |(from, from_life), (to, to_life), tx: &Arc<Mutex<Pipe>>, rx: &Arc<Mutex<Pipe>>| {
                SimStream {
                    core: Arc::clone(&self.core),
                    from,
                    to,
                    lives: (from_life, to_life),
                    tx: Arc::clone(tx),
                    rx: Arc::clone(rx),
                    finished: false,
                }
            };
        let mut peer = lock(&self.peer_incoming);
        peer.streams.push_back(stream(
            (self.remote, self.remote_life),
            (self.local, self.local_life),
            &ba,
            &ab,
        ));
        if let Some(w) = peer.waker.take() {
            w.wake();
        }
        Ok(stream(
            (self.local, self.local_life),
            (self.remote, self.remote_life),
            &ab,
            &ba,
        ))
    }

    async fn accept_stream(&self) -> Result<SimStream, NetError> {
        poll_fn(|cx| {
            if lock(&self.state).closed {
                return Poll::Ready(Err(NetError::Closed));
            }
            let mut incoming = lock(&self.incoming);
            match incoming.streams.pop_front() {
                Some(s) => Poll::Ready(Ok(s)),
                None => {
                    incoming.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Breaks every stream of the connection on both ends; opening or accepting a
    /// stream on it fails from now on.
    fn close(&self) {
        let pipes = {
            let mut state = lock(&self.state);
            state.closed = true;
            std::mem::take(&mut state.pipes)
        };
        for pipe in pipes.iter().filter_map(Weak::upgrade) {
            lock(&pipe).break_off(Broken::Closed);
        }
        for incoming in [&self.incoming, &self.peer_incoming] {
            if let Some(w) = lock(incoming).waker.take() {
                w.wake();
            }
        }
    }
}

impl SimStream {
    fn push(&mut self, data: Option<Vec<u8>>) -> Result<(), NetError> {
        let mut core = lock(&self.core);
        let mut pipe = lock(&self.tx);
        if let Some(why) = pipe.broken {
            return Err(why.error());
        }
        let now = core.now;
        let (at, held) = core.fabric.stream_arrival(now, self.from, self.to);
        let at = at.max(pipe.last_at);
        pipe.last_at = at;
        let seq = pipe.next_send;
        pipe.next_send += 1;
        drop(pipe);
        let (pipe, from, to) = (Arc::clone(&self.tx), self.from, self.to);
        core.send_frame(
            at,
            Frame {
                pipe,
                reverse: Arc::clone(&self.rx),
                lives: self.lives,
                seq,
                data,
                from,
                to,
                first_try: at,
                held,
            },
        );
        Ok(())
    }
}

impl BiStream for SimStream {
    async fn send_frame(&mut self, frame: &[u8]) -> Result<(), NetError> {
        // Refused as QUIC refuses it.
        if frame.len() > kvs_net::MAX_FRAME {
            return Err(NetError::TooLarge {
                len: frame.len(),
                max: kvs_net::MAX_FRAME,
            });
        }
        self.push(Some(frame.to_vec()))
    }

    async fn recv_frame(&mut self) -> Result<Option<Vec<u8>>, NetError> {
        poll_fn(|cx| {
            let mut pipe = lock(&self.rx);
            if let Some(data) = pipe.ready.pop_front() {
                pipe.ended |= data.is_none();
                return Poll::Ready(Ok(data));
            }
            if pipe.ended {
                return Poll::Ready(Ok(None));
            }
            if let Some(why) = pipe.broken {
                return Poll::Ready(Err(why.error()));
            }
            pipe.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    fn finish(&mut self) -> Result<(), NetError> {
        if std::mem::replace(&mut self.finished, true) {
            return Ok(());
        }
        self.push(None)
    }
}

impl Drop for SimStream {
    fn drop(&mut self) {
        // A stream dropped unfinished ends for the peer, as a dropped quinn stream does
        // (its `recv_frame` returns `None` instead of waiting for its timeout).
        let _ = self.finish();
    }
}
