//! The real datagram transport: a tokio UDP socket whose datagrams are sealed and opened
//! with [`DatagramAuth`] (feature `udp`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::{
    AuthCounts, AuthError, Clock, ClusterSecret, DatagramAuth, Datagrams, MAX_DATAGRAM,
    MAX_PAYLOAD, NetError, SystemClock,
};

/// At most one warning of each kind (a peer's clock, a foreign secret) per this long: the
/// sender sends several datagrams a second.
const WARNING_EVERY: Duration = Duration::from_secs(60);

/// Authenticated datagrams over a UDP socket. Share it behind an `Arc` between a sending
/// and a receiving task. Keep receiving: the addressing handshake (see [`DatagramAuth`])
/// runs inside [`Datagrams::recv_from`], so a datagram to a peer not heard from yet is
/// delivered only once our side reads the peer's hello.
pub struct UdpTransport {
    socket: UdpSocket,
    auth: DatagramAuth,
    clock: Arc<dyn Clock>,
    /// When the last warning about a stale datagram was logged.
    skew_warned: Mutex<Option<Instant>>,
    /// When the last warning about a datagram of another secret was logged.
    secret_warned: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for UdpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpTransport")
            .field("socket", &self.socket)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl UdpTransport {
    /// Binds `addr` (port 0 picks one) with the system clock.
    pub async fn bind(addr: SocketAddr, secret: &ClusterSecret) -> Result<Self, NetError> {
        Self::bind_with(
            addr,
            DatagramAuth::new(secret),
            Arc::new(SystemClock::new()),
        )
        .await
    }

    /// Binds `addr` with a chosen guard (e.g. a custom replay window) and clock.
    pub async fn bind_with(
        addr: SocketAddr,
        auth: DatagramAuth,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, NetError> {
        let socket = UdpSocket::bind(addr).await?;
        Ok(Self {
            socket,
            auth,
            clock,
            skew_warned: Mutex::new(None),
            secret_warned: Mutex::new(None),
        })
    }

    /// Logs a refused datagram that points at a misconfiguration, at most once per
    /// [`WARNING_EVERY`] for each kind, since it otherwise shows only as a node that never
    /// joins: a stale one (almost always a peer whose clock is off by more than the
    /// freshness bound) or one with a wrong MAC (a node with another `cluster_secret`).
    fn warn_about(&self, from: SocketAddr, error: &AuthError) {
        let throttle = match error {
            AuthError::Stale { .. } => &self.skew_warned,
            AuthError::BadMac => &self.secret_warned,
            _ => return,
        };
        let mut warned = throttle.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.is_some_and(|at| at.elapsed() < WARNING_EVERY) {
            return;
        }
        *warned = Some(Instant::now());
        if let AuthError::Stale { stamp_us, now_us } = *error {
            let ahead_s = (i128::from(stamp_us) - i128::from(now_us)) as f64 / 1e6;
            tracing::warn!(
                %from,
                ahead_s,
                "refused a datagram stamped {ahead_s:+.0} s from this node's clock (stale or \
                 replayed): if the sender's clock is off, synchronise the clocks (NTP)"
            );
        } else {
            tracing::warn!(
                %from,
                "refused a datagram that does not carry this cluster's signature: the sender \
                 has another cluster_secret (every node of a cluster needs the same one), or \
                 the datagram was damaged"
            );
        }
    }

    /// The authentication counters.
    pub fn counts(&self) -> AuthCounts {
        self.auth.counts()
    }
}

impl Datagrams for UdpTransport {
    async fn send_to(&self, to: SocketAddr, payload: &[u8]) -> Result<(), NetError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(NetError::TooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        let mut wire = Vec::with_capacity(MAX_DATAGRAM);
        self.auth
            .seal(self.clock.unix_micros(), to, payload, &mut wire)?;
        self.socket.send_to(&wire, to).await?;
        Ok(())
    }

    async fn recv_from(&self) -> Result<(SocketAddr, Vec<u8>), NetError> {
        // One byte more than the maximum, so that an oversized datagram is seen as such.
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            let (len, from) = match self.socket.recv_from(&mut buf).await {
                Ok(got) => got,
                // Windows reports ICMP port-unreachable on the next receive; skip it.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => continue,
                Err(e) => return Err(e.into()),
            };
            let now = self.clock.unix_micros();
            let opened = self.auth.open(now, from, &buf[..len]);
            if let Err(error) = &opened {
                self.warn_about(from, error);
            }
            let payload = opened.ok().flatten().map(<[u8]>::to_vec);
            // The addressing handshake's hellos and re-sent first contacts. One that is
            // lost (a failed send, or this future dropped) is like a lost datagram.
            while let Some((to, wire)) = self.auth.poll_transmit() {
                let _ = self.socket.send_to(&wire, to).await;
            }
            if let Some(payload) = payload {
                return Ok((from, payload));
            }
        }
    }

    fn local_addr(&self) -> Result<SocketAddr, NetError> {
        Ok(self.socket.local_addr()?)
    }
}
