//! The HTTP routes: one warp filter that hands every request to [`Api::handle`], which
//! dispatches on method and path and answers every failure with the contract's error
//! body. Dispatching by hand (rather than with chained warp filters and rejections) keeps
//! `404`/`405`/`413` and the error format exact for every path.
//!
//! Authentication happens in the dispatcher, before any handler: every path but
//! `/health` and the console page `/ui` gets a [`Caller`] (or a `401`), and each handler
//! asks [`Api::authorize`] about its operation once it knows the key's metadata. Rate
//! limiting follows it, for every path but those two and `/metrics`; then a query
//! parameter a write, or a read that takes parameters, does not take is refused (`400`).

mod admin;
mod audit;
mod auth_groups;
mod auth_routes;
mod auth_tokens;
mod auth_users;
mod authn;
mod bootstrap;
mod caller_cache;
mod cluster;
mod kv;
mod meta;
mod rate_limit;
mod records;
mod request;
#[cfg(test)]
mod tests;
mod watch;

pub use self::watch::WATCH_RESUMED_HEADER;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::Buf;
use futures_util::Stream;
use warp::Filter;
use warp::http::{HeaderMap, Method, Response, StatusCode, header};
use warp::reply::Response as WarpResponse;

use crate::auth::{Operation, User};
use crate::metrics::{RequestMetrics, route};
use crate::{ApiError, Backend};

pub use authn::AuthConfig;
pub(crate) use authn::Caller;
pub use rate_limit::RateLimit;
pub(crate) use request::Query;
#[cfg(test)]
pub(crate) use request::positive;

/// Settings of the API taken from the node's config.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The largest request body, in bytes.
    pub max_value_bytes: usize,
    /// Whether `GET /history/{key}` answers.
    pub history_enabled: bool,
    /// Permission bits of a new key.
    pub default_permissions: u16,
    /// The version string `GET /health` reports.
    pub version: String,
    /// Authentication and permissions; `None` when `auth_enabled` is false.
    pub auth: Option<AuthConfig>,
    /// Per-client limits; `None` when `rate_limiting_enabled` is false.
    pub rate_limit: Option<RateLimit>,
}

/// The API of one node over its [`Backend`].
pub struct Api<B> {
    /// This API itself, for what outlives a request's borrow of it (a `/watch` stream
    /// authenticates its caller again at each change).
    me: Weak<Self>,
    backend: Arc<B>,
    config: ApiConfig,
    metrics: RequestMetrics,
    /// Serializes `/auth` changes on this node, so that checks such as unique names see
    /// the previous change.
    admin_lock: tokio::sync::Mutex<()>,
    /// Recently authenticated callers.
    callers: caller_cache::CallerCache,
    /// Per-client request counters, while rate limiting is on.
    limiter: Option<rate_limit::RateLimiter>,
}

tokio::task_local! {
    /// The user a request acts for (`None`: anonymous), for the audit trail of the
    /// records it writes; unset outside requests (the node's own writes).
    static ACTOR: Option<String>;
}

/// Who the current task writes for: the request's user, `None` for an anonymous one,
/// `Some("system")` outside any request.
pub(crate) fn current_actor() -> Option<String> {
    ACTOR
        .try_with(Clone::clone)
        .unwrap_or_else(|_| Some("system".to_owned()))
}

/// A request as it arrives, before parsing.
pub struct RawRequest<'a> {
    /// The method.
    pub method: Method,
    /// The raw (percent-encoded) path.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    /// The headers.
    pub headers: HeaderMap,
    /// The client's address, when known.
    pub remote: Option<SocketAddr>,
}

/// One request as the dispatcher sees it.
pub(crate) struct Request<'a> {
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
    pub(crate) query: Query,
    pub(crate) headers: &'a HeaderMap,
    /// The client's address, when known.
    pub(crate) remote: Option<SocketAddr>,
}

type Handled = Result<WarpResponse, ApiError>;

impl<B: Backend> Api<B> {
    /// An API over `backend`.
    pub fn new(backend: Arc<B>, config: ApiConfig) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: Weak::clone(me),
            backend,
            limiter: config.rate_limit.map(rate_limit::RateLimiter::new),
            config,
            metrics: RequestMetrics::new(),
            admin_lock: tokio::sync::Mutex::new(()),
            callers: caller_cache::CallerCache::new(),
        })
    }

    /// The API as a warp filter; it rejects nothing it can read. The node's HTTP server
    /// hands requests to [`Self::handle`] itself, without warp's extraction; this filter
    /// does the same extraction, for the tests (`warp::test`).
    pub fn filter(
        self: &Arc<Self>,
    ) -> impl Filter<Extract = (WarpResponse,), Error = warp::Rejection> + Clone + use<B> {
        let api = Arc::clone(self);
        warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(warp::addr::remote())
            .and(warp::body::stream())
            .then(
                move |method, path: warp::path::FullPath, query: String, headers, remote, body| {
                    let api = Arc::clone(&api);
                    async move {
                        let request = RawRequest {
                            method,
                            path: path.as_str(),
                            query: &query,
                            headers,
                            remote,
                        };
                        api.handle(request, body).await
                    }
                },
            )
    }

    /// Answers one request: dispatch, error mapping, metrics.
    pub async fn handle<S, D, E>(&self, raw: RawRequest<'_>, body: S) -> WarpResponse
    where
        S: Stream<Item = Result<D, E>> + Send,
        E: std::fmt::Display,
        D: Buf,
    {
        let started = Instant::now();
        let method = raw.method;
        let parsed = match Query::parse(raw.query) {
            // `/health` reads no query: a probe is never refused for one.
            Err(_) if raw.path == "/health" => Ok(Query::default()),
            parsed => parsed,
        };
        let (route, result) = match parsed {
            Ok(query) => {
                let request = Request {
                    method: &method,
                    path: raw.path,
                    query,
                    headers: &raw.headers,
                    remote: raw.remote,
                };
                self.dispatch(&request, body).await
            }
            Err(malformed) => {
                request::discard(body).await;
                (route_index(raw.path), Err(malformed))
            }
        };
        let mut response = result.unwrap_or_else(|error| error_response(&error));
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            // RFC 9110: a 405 names the methods the resource supports.
            response.headers_mut().insert(
                header::ALLOW,
                header::HeaderValue::from_static(allowed_methods(raw.path)),
            );
        }
        self.metrics.record(
            route,
            method.as_str(),
            response.status().as_u16(),
            started.elapsed(),
        );
        response
    }

    async fn dispatch<S, D, E>(&self, request: &Request<'_>, body: S) -> (usize, Handled)
    where
        S: Stream<Item = Result<D, E>> + Send,
        E: std::fmt::Display,
        D: Buf,
    {
        let path = request.path;
        match path {
            "/health" => {
                let health = self.only_get(request, async { self.health() }).await;
                return (route::HEALTH, health);
            }
            // The page needs no token (a browser cannot send one to load it): it asks for
            // one and sends it with its own calls. It is rate limited by address.
            "/ui" | "/ui/" => {
                if let Err(wait) = self.admit(request, None) {
                    return (route::UI, Err(ApiError::rate_limited(wait)));
                }
                let console = async { Ok(cluster::console()) };
                return (route::UI, self.only_get(request, console).await);
            }
            _ => {}
        }
        let route = route_index(path);
        let caller = match self.authenticate(request.headers) {
            Ok(caller) => caller,
            Err(error) => {
                request::discard(body).await;
                // A refused token counts against the address, so that guessing is limited
                // too; on `/metrics`, which is never rate limited, it is only refused.
                let refused = match path == "/metrics" {
                    true => error,
                    false => match self.admit(request, None) {
                        Ok(()) => error,
                        Err(wait) => ApiError::rate_limited(wait),
                    },
                };
                return (route, Err(refused));
            }
        };
        // `/metrics` is never rate limited (it still needs a token while auth is on).
        if path != "/metrics"
            && let Err(wait) = self.admit(request, caller.user())
        {
            request::discard(body).await;
            return (route, Err(ApiError::rate_limited(wait)));
        }
        if let Err(unknown) = known_parameters_only(request, route) {
            request::discard(body).await;
            return (route, Err(unknown));
        }
        let actor = caller.user().map(|user| user.id.clone());
        let routed = ACTOR.scope(actor, self.route(request, &caller, body));
        (route, routed.await)
    }

    /// Counts the request against its client's rate limit: the authenticated `user`, else
    /// the remote IP.
    fn admit(&self, request: &Request<'_>, user: Option<&User>) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let client = match (user, request.remote) {
            (Some(user), _) => format!("user:{}", user.id),
            (None, Some(addr)) => format!("ip:{}", addr.ip()),
            (None, None) => "ip:unknown".to_owned(),
        };
        limiter.admit(&client, Instant::now())
    }

    /// Answers a read of one key at once, and runs every other request in a future boxed
    /// on its own: the largest handler's state is kilobytes, which every request's future
    /// would otherwise carry, and copy each time it is moved (a tenth of a GET's CPU).
    async fn route<S, D, E>(&self, request: &Request<'_>, caller: &Caller, body: S) -> Handled
    where
        S: Stream<Item = Result<D, E>> + Send,
        E: std::fmt::Display,
        D: Buf,
    {
        if let Some(raw_key) = request
            .path
            .strip_prefix("/kv/")
            .filter(|key| !key.is_empty())
        {
            match *request.method {
                Method::GET => return self.get_key(request.headers, caller, raw_key, false),
                Method::HEAD => return self.get_key(request.headers, caller, raw_key, true),
                _ => {}
            }
        }
        Box::pin(self.route_others(request, caller, body)).await
    }

    async fn route_others<S, D, E>(
        &self,
        request: &Request<'_>,
        caller: &Caller,
        body: S,
    ) -> Handled
    where
        S: Stream<Item = Result<D, E>> + Send,
        E: std::fmt::Display,
        D: Buf,
    {
        let (path, method) = (request.path, request.method);
        if path.starts_with("/admin/") || path.starts_with("/audit") {
            // Admin endpoints, whatever handlers they get: scope admin first.
            if let Err(refused) = self.authorize(caller, Operation::Admin) {
                request::discard(body).await;
                return Err(refused);
            }
        }
        // `/kv/` alone is the listing, but a write or a delete there names an empty key.
        let names_a_key =
            |raw_key: &&str| !raw_key.is_empty() || matches!(*method, Method::PUT | Method::DELETE);
        if let Some(raw_key) = path.strip_prefix("/kv/").filter(names_a_key) {
            return match *method {
                Method::PUT => self.put_key(request, caller, raw_key, body).await,
                Method::DELETE => self.delete_key(request, caller, raw_key).await,
                _ => Err(ApiError::method_not_allowed(method.as_str(), path)),
            };
        }
        if let Some(raw_key) = path.strip_prefix("/history/") {
            return self.only_get(request, self.history(caller, raw_key)).await;
        }
        // A HEAD of these answers as their GET does, without the body.
        let head = *method == Method::HEAD;
        let get;
        let request = if head {
            get = as_get(request);
            &get
        } else {
            request
        };
        let strip = |handled: Handled| {
            if head {
                handled.map(strip_body)
            } else {
                handled
            }
        };
        if let Some(raw_key) = path.strip_prefix("/meta/") {
            return strip(self.meta(request, caller, raw_key, body).await);
        }
        if let Some(rest) = path.strip_prefix("/admin/") {
            request::discard(body).await;
            return strip(self.admin(request, rest).await);
        }
        if let Some(rest) = path.strip_prefix("/auth/") {
            return strip(self.auth(request, caller, rest, body).await);
        }
        match path {
            "/kv" | "/kv/" => {
                self.only_get(request, self.list(caller, &request.query))
                    .await
            }
            "/members" => self.only_get(request, async { self.members(caller) }).await,
            "/metrics" => self.only_get(request, self.metrics(caller)).await,
            "/openapi.json" => self.only_get(request, async { self.openapi(caller) }).await,
            "/sync" => self.only_get(request, self.sync(caller)).await,
            "/watch" => self.only_get(request, self.watch(request, caller)).await,
            "/audit" => {
                self.only_get(request, self.audit_entries(&request.query))
                    .await
            }
            "/audit/verify" => self.only_get(request, self.audit_verify()).await,
            _ => Err(ApiError::not_found(format!("no route for {path}"))),
        }
    }

    /// Answers a `GET` (or a `HEAD`, without the body) with `handler`; any other method
    /// gets `405` and `handler` never runs.
    async fn only_get(
        &self,
        request: &Request<'_>,
        handler: impl Future<Output = Handled>,
    ) -> Handled {
        match *request.method {
            Method::GET => handler.await,
            Method::HEAD => handler.await.map(strip_body),
            _ => Err(ApiError::method_not_allowed(
                request.method.as_str(),
                request.path,
            )),
        }
    }

    /// Runs `work` over the backend on tokio's blocking pool and waits for it there.
    ///
    /// Every backend call that may wait goes through here rather than running on a
    /// runtime worker: the durable store's scans and stats wait for its background
    /// applier to catch up, audit verification walks the whole chain, backups read the
    /// disk. On a worker such a call would stall every other task scheduled on it
    /// (gossip, QUIC sessions, other requests) for as long as it waits.
    pub(crate) async fn blocking<T, W>(&self, work: W) -> Result<T, ApiError>
    where
        T: Send + 'static,
        W: FnOnce(&B) -> Result<T, ApiError> + Send + 'static,
    {
        let backend = Arc::clone(&self.backend);
        tokio::task::spawn_blocking(move || work(&backend))
            .await
            .map_err(|e| ApiError::internal(format!("a blocking store call failed: {e}")))?
    }
}

/// A response with a JSON body.
pub(crate) fn json_response(status: StatusCode, body: String) -> WarpResponse {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(error: &ApiError) -> WarpResponse {
    let mut response = json_response(error.status(), error.body());
    if let Some(seconds) = error.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
    }
    if let Some(challenge) = error.www_authenticate() {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static(challenge),
        );
    }
    response
}

/// The metrics route of a path that needs authentication (see [`route`]).
fn route_index(path: &str) -> usize {
    if path.starts_with("/kv/") && path.len() > 4 {
        route::KV
    } else if path == "/kv" || path == "/kv/" {
        route::KV_LIST
    } else if path.starts_with("/history/") {
        route::HISTORY
    } else if path == "/members" {
        route::MEMBERS
    } else if path == "/metrics" {
        route::METRICS
    } else if path == "/openapi.json" {
        route::OPENAPI
    } else if path.starts_with("/auth/") {
        route::AUTH
    } else if path.starts_with("/meta/") {
        route::META
    } else if path == "/sync" {
        route::SYNC
    } else if path == "/watch" {
        route::WATCH
    } else if path == "/audit" || path.starts_with("/audit/") {
        route::AUDIT
    } else if path.starts_with("/admin/") {
        route::ADMIN
    } else {
        route::OTHER
    }
}

/// `400` for a query parameter that `request` does not take, where ignoring it would
/// change what the request does: on a write (`?tll=30s`, Consul's `?cas=0` or
/// `?recurse`), and on the reads that take parameters (`GET /kv?prefx=`). Other reads
/// ignore theirs, as `/health` and `/metrics` do for probes and scrapers; paths outside
/// the API (`404`) and methods a path does not answer (`405`) are not checked.
fn known_parameters_only(request: &Request<'_>, route: usize) -> Result<(), ApiError> {
    let (method, path) = (request.method, request.path);
    if request.query.is_empty() {
        return Ok(());
    }
    let read = matches!(*method, Method::GET | Method::HEAD);
    let takes_parameters = matches!(route, route::KV_LIST | route::WATCH) || path == "/audit";
    let answered = || {
        allowed_methods(path)
            .split(", ")
            .any(|allowed| allowed == method.as_str())
    };
    if route == route::OTHER || (read && !takes_parameters) || !answered() {
        return Ok(());
    }
    let allowed: &[&str] = match (route, method) {
        (route::KV, &Method::PUT) => &["ttl"],
        (route::KV_LIST, _) => &["prefix", "limit", "cursor", "since"],
        (route::WATCH, _) => &["prefix", "since"],
        (route::AUDIT, _) if path == "/audit" => &["since_seq", "limit"],
        _ => &[],
    };
    request.query.only(allowed, &format!("{method} {path}"))
}

/// The methods a path answers (the `Allow` header of its `405`s).
fn allowed_methods(path: &str) -> &'static str {
    if path.starts_with("/kv/") && path.len() > 4 {
        return "GET, HEAD, PUT, DELETE";
    }
    if path.starts_with("/meta/") {
        return "GET, HEAD, PUT";
    }
    if let Some(rest) = path.strip_prefix("/auth/") {
        return match rest.split_once('/') {
            None if rest == "tokens" => "POST",
            None => "GET, HEAD, POST",
            Some(("tokens", _)) => "DELETE",
            Some(_) => "GET, HEAD, PUT, DELETE",
        };
    }
    if path == "/admin/backups" {
        return "GET, HEAD, POST";
    }
    "GET, HEAD"
}

/// `request` as a GET (for a HEAD answered like its GET).
fn as_get<'a>(request: &Request<'a>) -> Request<'a> {
    Request {
        method: &Method::GET,
        path: request.path,
        query: request.query.clone(),
        headers: request.headers,
        remote: request.remote,
    }
}

fn strip_body(response: WarpResponse) -> WarpResponse {
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, String::new().into())
}
