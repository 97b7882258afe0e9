//! The HTTP server: the API served on hyper connections, with the limits hyper leaves to
//! its user (`http_header_timeout`, `http_idle_timeout`, `max_connections`).
//!
//! - **Connections.** The accept loop takes a slot of a semaphore of `max_connections`
//!   before it accepts; beyond that, new connections wait in the kernel's listen backlog
//!   until one closes.
//! - **Timeouts.** Each connection's socket is wrapped so that every read and write is
//!   noted ([`Activity`]). Once a byte of a request head has arrived, the whole head must
//!   arrive within `http_header_timeout` (the request reaches the API when it has); its
//!   body must keep arriving, with no pause as long as `http_header_timeout` (a body
//!   stalled halfway would hold its connection, and a shutdown, forever); a connection
//!   with no request in progress and no traffic for `http_idle_timeout` is closed. A
//!   request whose body has arrived is never cut while it is handled, its response body
//!   included. The
//!   watch runs in the connection's task: after each read it looks whether a head
//!   started, which brings the deadline forward, so that a request costs no wake-up or
//!   timer of its own. (hyper's own `header_read_timeout` also runs while a keep-alive
//!   connection waits for its next request, which would close idle connections after the
//!   header timeout, hence the watch here.)
//! - **Threads.** Connections are served on one thread per core, each running its own
//!   current-thread tokio runtime: the accept loop (on the node's runtime) deals them to
//!   the threads in turn, and a connection's requests never hop between threads (the
//!   multi-threaded runtime woke a second worker to steal, a context switch for each
//!   burst of requests). Dealt in turn rather than taken by whichever thread accepts
//!   first: a burst of new connections would all go to the one thread awake. Handlers
//!   that wait on the store run on the blocking pool as before; the rest of the node keeps
//!   the main runtime.
//! - **Writes run to their end.** hyper drops a request's future when its client hangs up
//!   (or its connection times out). A read may stop there, but a request that changes
//!   something (any method but `GET` and `HEAD`) runs as a task of its own, which the
//!   connection only waits for: a write the commit thread has taken is still pushed to
//!   the peers, and a handler that writes several records (a group and its members) or
//!   clears a cache after its write does all of it, whoever is left to read the answer.
//! - **Half-closed connections.** A client may shut down its side once it has sent its
//!   request and still read the answer (hyper would otherwise close the connection at
//!   the end of its input, before answering).
//! - **Shutdown.** When `shutdown` turns true the listener closes, every connection is
//!   asked to finish its in-flight request and close, and [`serve`] returns once all have,
//!   and every write whose client had hung up has ended. A request whose body is still
//!   arriving gets `http_header_timeout` from then to finish it.
//!
//! The API is handed each request as hyper parsed it, with the client's address
//! ([`Respond`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use kvs_api::{Api, Backend, RawRequest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// The connection limits of the HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request head must arrive within this once it has started.
    pub header_timeout: Duration,
    /// A connection without a request in progress is closed after this without traffic.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: u32,
}

/// What the server serves: an answer to each request, given the client's address; one
/// copy per connection, on any thread.
pub trait Respond: Clone + Send + Sync + 'static {
    /// Answers `request`, which came from `remote`.
    fn respond(
        self,
        request: Request<Arriving>,
        remote: SocketAddr,
    ) -> impl Future<Output = warp::reply::Response> + Send + 'static;
}

/// The node's API, handed each request as hyper parsed it (no warp filters in between:
/// their extraction, a copy of every request's headers among it, was a tenth of a GET's
/// time).
impl<B: Backend> Respond for Arc<Api<B>> {
    async fn respond(
        self,
        request: Request<Arriving>,
        remote: SocketAddr,
    ) -> warp::reply::Response {
        let (parts, body) = request.into_parts();
        let raw = RawRequest {
            method: parts.method,
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: parts.headers,
            remote: Some(remote),
        };
        self.handle(raw, body.into_data_stream()).await
    }
}

/// Starts serving `api` on `listener` within `limits` on `threads` threads (see the
/// module doc) until `shutdown` turns true; the future returned accepts connections and
/// completes once in-flight requests have finished, every connection has closed and every
/// thread has ended.
pub fn serve<R>(
    api: R,
    listener: TcpListener,
    threads: usize,
    limits: HttpLimits,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<impl Future<Output = ()>>
where
    R: Respond,
{
    let mut handoffs = Vec::new();
    let mut ended = Vec::new();
    for n in 0..threads.max(1) {
        let (handoff, accepted) = mpsc::unbounded_channel();
        let (api, shutdown) = (api.clone(), shutdown.clone());
        let (done, end) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("kvs-http-{n}"))
            .spawn(move || {
                runtime.block_on(serve_handed(api, accepted, limits, shutdown));
                // What is left of the connections' tasks (and their handles on the API)
                // ends with the runtime, before the node is told this thread is done.
                drop(runtime);
                let _ = done.send(());
            })?;
        handoffs.push(handoff);
        ended.push(end);
    }
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    Ok(async move {
        let mut turn = 0;
        while let Some((stream, remote, slot)) = accept(&listener, &slots, &mut shutdown).await {
            // Taken off this runtime's reactor, to be registered with the thread's.
            match stream.into_std() {
                Ok(stream) => {
                    let accepted = Accepted {
                        stream,
                        remote,
                        slot,
                    };
                    let _ = handoffs[turn % handoffs.len()].send(accepted);
                    turn += 1;
                }
                Err(error) => tracing::debug!(%remote, %error, "an accepted connection failed"),
            }
        }
        drop(listener);
        drop(handoffs);
        for end in ended {
            let _ = end.await;
        }
    })
}

/// A connection accepted for a server thread, with its slot among `max_connections`.
struct Accepted {
    stream: std::net::TcpStream,
    remote: SocketAddr,
    slot: OwnedSemaphorePermit,
}

/// The server of one thread: serves the connections handed to it on this thread's
/// runtime until the hand-off closes and each of them has closed.
async fn serve_handed<R>(
    api: R,
    mut handed: mpsc::UnboundedReceiver<Accepted>,
    limits: HttpLimits,
    shutdown: watch::Receiver<bool>,
) where
    R: Respond,
{
    let mut connections = JoinSet::new();
    let writes = TaskTracker::new();
    loop {
        tokio::select! {
            next = handed.recv() => {
                let Some(Accepted { stream, remote, slot }) = next else {
                    break;
                };
                let stream = match TcpStream::from_std(stream) {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::debug!(%remote, %error, "an accepted connection failed");
                        continue;
                    }
                };
                let connection = Connection {
                    limits,
                    remote,
                    activity: Arc::new(Activity::new()),
                    _slot: slot,
                };
                let service = Tracked {
                    api: api.clone(),
                    remote,
                    activity: Arc::clone(&connection.activity),
                    writes: writes.clone(),
                };
                connections.spawn(connection.serve(stream, service, shutdown.clone()));
            }
            Some(_) = connections.join_next() => {}
        }
    }
    while connections.join_next().await.is_some() {}
    writes.close();
    writes.wait().await;
}

/// The next connection, once a slot is free; `None` once `shutdown` turns true.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(slots).acquire_owned() => slot.ok()?,
            _ = shutdown.wait_for(|stop| *stop) => return None,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return None,
        };
        match accepted {
            Ok((stream, remote)) => return Some((stream, remote, slot)),
            Err(error) => accept_failed(&error).await,
        }
    }
}

/// After a failed accept: a connection that died in the backlog is nothing; anything else
/// (say, out of file descriptors) is logged and waited out for a second.
async fn accept_failed(error: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        tracing::error!(%error, "accepting an HTTP connection failed");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One accepted connection.
struct Connection {
    limits: HttpLimits,
    remote: SocketAddr,
    activity: Arc<Activity>,
    /// Its slot among `max_connections`, given back when the connection closes.
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    /// Serves the connection until the client closes it, a timeout runs out (the socket is
    /// then dropped), or shutdown lets its in-flight request finish.
    async fn serve<R: Respond>(
        self,
        stream: TcpStream,
        service: Tracked<R>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: Arc::clone(&self.activity),
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().half_close(true);
        let connection = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(connection);
        let stop = shutdown.wait_for(|stop| *stop);
        tokio::pin!(stop);
        let mut stopping = false;
        // Once stopping: when a request whose body is still arriving is cut.
        let mut stop_limit = Instant::now();
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        loop {
            let deadline = self.activity.deadline(&self.limits);
            if deadline <= Instant::now() {
                tracing::debug!(remote = %self.remote, "HTTP connection timed out");
                return;
            }
            if stopping && self.activity.body_arriving() && stop_limit <= Instant::now() {
                tracing::debug!(remote = %self.remote, "HTTP connection cut at shutdown: its request body had not arrived");
                return;
            }
            timer.as_mut().reset(match stopping {
                true => deadline.min(stop_limit),
                false => deadline,
            });
            // The connection and its watch are one task: each time hyper has read, the
            // watch looks whether a request head started, which brings the deadline
            // forward, and moves its timer then (once per timer run out, not per request:
            // a later head's deadline is later). No wake-up of its own, no new timer.
            let woke = std::future::poll_fn(|cx| {
                if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                    return Poll::Ready(Woke::Ended(result));
                }
                let deadline = self.activity.deadline(&self.limits);
                if deadline < timer.deadline() {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woke::Timer);
                }
                if !stopping && stop.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woke::Stop);
                }
                Poll::Pending
            })
            .await;
            match woke {
                Woke::Ended(result) => {
                    if let Err(error) = result {
                        tracing::debug!(remote = %self.remote, %error, "HTTP connection ended");
                    }
                    return;
                }
                // Looked at again at the top of the loop.
                Woke::Timer => {}
                Woke::Stop => {
                    connection.as_mut().graceful_shutdown();
                    stopping = true;
                    stop_limit = Instant::now() + self.limits.header_timeout;
                }
            }
        }
    }
}

/// Why a connection's task woke.
enum Woke<E> {
    /// The connection ended (`Err`: with an error).
    Ended(Result<(), E>),
    /// Its timer ran out.
    Timer,
    /// Shutdown was asked.
    Stop,
}

/// The API as hyper's service, counting its requests in flight and telling it the client
/// address; each request runs in a `request` span (id, method, path with the key, client),
/// and a request that may change something runs as a task of `writes` (see the module
/// docs).
struct Tracked<R> {
    api: R,
    remote: SocketAddr,
    activity: Arc<Activity>,
    writes: TaskTracker,
}

type Answered = Result<hyper::Response<Counted>, Infallible>;

impl<R> Tracked<R> {
    /// Runs `answer` as a task that ends even if the future returned is dropped.
    fn run_to_end(
        &self,
        answer: impl Future<Output = Answered> + Send + 'static,
    ) -> Pin<Box<dyn Future<Output = Answered> + Send>> {
        let task = self.writes.spawn(answer);
        Box::pin(async move {
            match task.await {
                Ok(answered) => answered,
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                // Cancelled: only when the thread's runtime goes, which drops this too.
                Err(_) => std::future::pending().await,
            }
        })
    }
}

impl<R: Respond> Service<Request<Incoming>> for Tracked<R> {
    type Response = hyper::Response<Counted>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Answered> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let span = tracing::debug_span!(
            "request",
            id = NEXT_ID.fetch_add(1, Ordering::Relaxed),
            method = %request.method(),
            path = %request.uri().path(),
            client = %self.remote,
        );
        let in_flight = self.activity.request_started();
        let request = request.map(|body| arriving(body, &self.activity));
        let reads_only = matches!(*request.method(), Method::GET | Method::HEAD);
        let (api, remote) = (self.api.clone(), self.remote);
        // A read's answer is made in the box, not moved there: a request's future is over
        // a kilobyte, and each move copies it all.
        let answer = async move {
            let answer = api.respond(request, remote).await;
            Ok(answer.map(|body| Guarded::new(body, Some(in_flight))))
        };
        match (reads_only, span.is_disabled()) {
            (true, true) => Box::pin(answer),
            (true, false) => Box::pin(tracing::Instrument::instrument(answer, span)),
            (false, true) => self.run_to_end(answer),
            (false, false) => self.run_to_end(tracing::Instrument::instrument(answer, span)),
        }
    }
}

/// The body of the API's responses (warp's, which has no name of its own).
type ApiBody = <warp::reply::Response as HasBody>::Body;

/// The body type of a response.
trait HasBody {
    type Body;
}

impl<B> HasBody for hyper::Response<B> {
    type Body = B;
}

/// A response body that keeps its request in flight until it has ended (or is dropped):
/// a long response, a `/watch` stream above all, is a request being handled, which the
/// idle timeout never cuts, however long it stays quiet.
type Counted = Guarded<ApiBody, InFlight>;

mod activity;
mod body;
#[cfg(test)]
mod tests;

use activity::{Activity, InFlight, Watched, arriving};
pub use activity::{Arriving, BodyArriving};
pub use body::Guarded;
