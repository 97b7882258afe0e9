//! The transport traits: the seam between protocol drivers and the network. Real
//! implementations are [`crate::UdpTransport`] and [`crate::QuicTransport`] (features
//! `udp`, `quic`); the simulator provides its own.

use std::future::Future;
use std::net::SocketAddr;

use crate::NetError;

/// Unreliable, unordered, authenticated datagrams of at most [`crate::MAX_PAYLOAD`] bytes
/// (SWIM). Datagrams that fail authentication never reach the caller; they are counted.
pub trait Datagrams: Send + Sync + 'static {
    /// Sends one datagram; `Ok` does not mean it arrives.
    fn send_to(
        &self,
        to: SocketAddr,
        payload: &[u8],
    ) -> impl Future<Output = Result<(), NetError>> + Send;

    /// Waits for the next authenticated datagram: its sender and payload.
    fn recv_from(&self) -> impl Future<Output = Result<(SocketAddr, Vec<u8>), NetError>> + Send;

    /// The address peers send to.
    fn local_addr(&self) -> Result<SocketAddr, NetError>;
}

/// Reliable connections to peers that proved they hold the cluster secret (sync).
pub trait StreamTransport: Send + Sync + 'static {
    /// An authenticated connection.
    type Conn: Connection;

    /// Connects to a peer and runs the mutual cluster-secret proof.
    fn connect(&self, to: SocketAddr) -> impl Future<Output = Result<Self::Conn, NetError>> + Send;

    /// Waits for the next incoming connection that passed the proof (refused peers are
    /// counted and skipped).
    fn accept(&self) -> impl Future<Output = Result<Self::Conn, NetError>> + Send;

    /// The address peers connect to.
    fn local_addr(&self) -> Result<SocketAddr, NetError>;
}

/// An authenticated connection carrying any number of bidirectional streams. Dropping the
/// last handle closes it, and data the peer has not read yet may be lost: keep a handle
/// until the exchange is over (e.g. until `recv_frame` returned `None`).
pub trait Connection: Clone + Send + Sync + 'static {
    /// A bidirectional stream of frames.
    type Stream: BiStream;

    /// The peer's address.
    fn remote_addr(&self) -> SocketAddr;

    /// Opens a new stream to the peer.
    fn open_stream(&self) -> impl Future<Output = Result<Self::Stream, NetError>> + Send;

    /// Waits for the peer to open a stream.
    fn accept_stream(&self) -> impl Future<Output = Result<Self::Stream, NetError>> + Send;

    /// Closes the connection (streams fail afterwards).
    fn close(&self);
}

/// The largest frame of a stream (16 MiB), on every transport: a larger one is refused
/// with [`NetError::TooLarge`] by its sender (and by a receiver, should one arrive).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// A reliable, ordered bidirectional stream of frames (byte strings).
pub trait BiStream: Send + 'static {
    /// Sends one frame.
    fn send_frame(&mut self, frame: &[u8]) -> impl Future<Output = Result<(), NetError>> + Send;

    /// Receives the next frame; `None` once the peer finished its side.
    fn recv_frame(&mut self) -> impl Future<Output = Result<Option<Vec<u8>>, NetError>> + Send;

    /// Finishes our sending side (the peer's `recv_frame` then returns `None`).
    fn finish(&mut self) -> Result<(), NetError>;
}
