//! What a connection has been doing ([`Activity`]): the socket wrapper that notes its
//! reads and writes, the requests in flight and the request bodies still arriving, and
//! from these the moment the connection times out (see the server's module docs).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{Guarded, HttpLimits};

/// Sentinel of [`Activity::head_since`]: no request head is being read.
const NO_HEAD: u64 = u64::MAX;

/// What a connection has been doing, in milliseconds since it was accepted.
pub(super) struct Activity {
    started: Instant,
    /// The last read or write, or the end of the last request.
    last_io: AtomicU64,
    /// When the first byte of the request head being read arrived, or [`NO_HEAD`].
    head_since: AtomicU64,
    /// Requests handed to the API and not yet answered.
    in_flight: AtomicUsize,
    /// Bodies of those requests that have not arrived in full yet.
    bodies_arriving: AtomicUsize,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            started: Instant::now(),
            last_io: AtomicU64::new(0),
            head_since: AtomicU64::new(NO_HEAD),
            in_flight: AtomicUsize::new(0),
            bodies_arriving: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Bytes arrived: outside a request they start (or continue) a request head.
    fn read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Release);
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ =
                self.head_since
                    .compare_exchange(NO_HEAD, now, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now(), Ordering::Release);
    }

    /// A whole request head arrived and goes to the API.
    pub(super) fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(NO_HEAD, Ordering::Release);
        InFlight(Arc::clone(self))
    }

    /// Whether a request's body is still arriving.
    pub(super) fn body_arriving(&self) -> bool {
        self.bodies_arriving.load(Ordering::Acquire) > 0
    }

    /// When the connection times out as things stand (re-checked then): a header time
    /// after the last read while a request's body is arriving; never while a request is
    /// handled (one idle period on); else the end of the header or idle time.
    pub(super) fn deadline(&self, limits: &HttpLimits) -> Instant {
        // The config bounds both timeouts to a day, so these sums fit in an `Instant`; were
        // one not to, the connection would time out at once instead of the thread panicking.
        let far = |from: Instant, after: Duration| from.checked_add(after).unwrap_or(from);
        let (since, limit) = if self.body_arriving() {
            (self.last_io.load(Ordering::Acquire), limits.header_timeout)
        } else if self.in_flight.load(Ordering::Acquire) > 0 {
            return far(Instant::now(), limits.idle_timeout);
        } else {
            match self.head_since.load(Ordering::Acquire) {
                NO_HEAD => (self.last_io.load(Ordering::Acquire), limits.idle_timeout),
                head => (head, limits.header_timeout),
            }
        };
        far(far(self.started, Duration::from_millis(since)), limit)
    }
}

/// A request in the API; the connection's idle time starts again when it is answered
/// (its response's body has ended, see [`Counted`]).
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.wrote();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request's body, which tells its connection's [`Activity`] while it is still
/// arriving (until its end, an error, or the handler drops it).
pub type Arriving = Guarded<Incoming, BodyArriving>;

pub(super) fn arriving(body: Incoming, activity: &Arc<Activity>) -> Arriving {
    use hyper::body::Body;
    let arriving = (!body.is_end_stream()).then(|| {
        activity.bodies_arriving.fetch_add(1, Ordering::AcqRel);
        BodyArriving(Arc::clone(activity))
    });
    Guarded::new(body, arriving)
}

/// Counts one body as arriving for as long as it lives.
pub struct BodyArriving(Arc<Activity>);

impl Drop for BodyArriving {
    fn drop(&mut self) {
        self.0.bodies_arriving.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A socket that notes its reads and writes in an [`Activity`].
pub(super) struct Watched {
    pub(super) inner: TcpStream,
    pub(super) activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
