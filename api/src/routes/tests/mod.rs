//! In-process route tests: the whole [`Api`] over a [`MemoryStore`] backend, driven with
//! `warp::test` (the filter a node serves), a few milliseconds each.
//!
//! - `kv`: the key-value contract's statuses, error codes and JSON fields (keys, bodies,
//!   limits, `404`/`405`, compare-and-set), as `tests/kv_api.rs` checked them against a
//!   process;
//! - `listing`: listings by prefix and by time, TTLs on the backend's clock, history;
//! - `node`: what a black-box test cannot set up (records as a replica merges them, a
//!   store call that blocks until the test lets it go) and the console's headers;
//! - `schema`: what schemathesis found (the served OpenAPI document, `Allow` on `405`s,
//!   requests the document calls invalid).
//!
//! `tests/kv_api.rs` keeps what needs a real process: a round trip of every JSON kind
//! through LMDB, the default body limit over TCP, an expiry on the node's own clock, and
//! `/health`, `/members` and `/metrics` of a running node.

mod bodies;
mod kv;
mod listing;
mod node;
mod schema;
mod watch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, ThreadId};

use kvs_sync::conformance::{Call, Hooked};
use kvs_sync::{
    AuditEntry, AuditVerdict, MemoryStore, Store, StoreError, StoreOptions, WriteOp, WriteOutcome,
    WriteRejected,
};
use serde_json::Value;
use tokio::sync::oneshot;
use warp::http::HeaderMap;

use super::{Api, ApiConfig, AuthConfig};
use crate::{Backend, BackupInfo, MemberInfo};

/// A node without IO: a memory store, a clock the test moves, no cluster, an empty audit
/// trail, no backups, a change stream that ends at once (a `/watch` sends its replay and
/// ends). Its calls that may block on a
/// real node (scans, history, stats, the merkle tree, the audit trail, the backup list)
/// pass its [`Gate`] first.
struct MemoryBackend {
    store: Hooked<MemoryStore>,
    gate: Arc<Gate>,
    /// Unix milliseconds: the wall clock when the backend was made, then moved only by
    /// [`MemoryBackend::advance`].
    clock: AtomicU64,
}

impl MemoryBackend {
    fn new(options: StoreOptions) -> Self {
        let gate = Arc::new(Gate::new());
        let since_epoch = std::time::UNIX_EPOCH.elapsed().unwrap_or_default();
        Self {
            store: gated_store(Arc::clone(&gate), options),
            gate,
            clock: AtomicU64::new(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// Moves the clock `ms` on.
    fn advance(&self, ms: u64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }
}

/// Where the backend's blocking calls stop while the test holds them.
struct Gate {
    /// The thread of the test's `current_thread` runtime: a call that waited there would
    /// hold the only thread the test could release it from.
    runtime_thread: ThreadId,
    armed: Mutex<Option<Armed>>,
}

/// One hold: the next blocking call reports on `entered`, then waits for `release`.
struct Armed {
    entered: oneshot::Sender<()>,
    release: mpsc::Receiver<()>,
}

impl Gate {
    /// A gate that lets everything through until armed; created on the runtime thread.
    fn new() -> Self {
        Self {
            runtime_thread: thread::current().id(),
            armed: Mutex::new(None),
        }
    }

    /// Holds the next blocking call: it signals the returned receiver once it waits, and
    /// waits until the returned sender sends (or is dropped).
    fn arm(&self) -> (oneshot::Receiver<()>, mpsc::Sender<()>) {
        let (entered, entered_rx) = oneshot::channel();
        let (release_tx, release) = mpsc::channel();
        *self.armed.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Armed { entered, release });
        (entered_rx, release_tx)
    }

    /// Called by every blocking call: passes at once unless armed. An armed call on the
    /// runtime thread is refused (waiting there could never end): the test sees its
    /// `entered` dropped unsent.
    fn pass(&self) -> Result<(), StoreError> {
        let armed = self
            .armed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(armed) = armed else {
            return Ok(());
        };
        if thread::current().id() == self.runtime_thread {
            return Err(StoreError::Backend(
                "a blocking store call ran on the runtime thread".into(),
            ));
        }
        let _ = armed.entered.send(());
        let _ = armed.release.recv();
        Ok(())
    }
}

/// A [`MemoryStore`] whose calls that wait on a durable store pass `gate` first.
fn gated_store(gate: Arc<Gate>, options: StoreOptions) -> Hooked<MemoryStore> {
    Hooked::new(MemoryStore::new(options), move |call| match call {
        Call::List
        | Call::ListSince
        | Call::History
        | Call::Purge
        | Call::Stats
        | Call::Merkle
        | Call::LeafEntries
        | Call::VersionsAfter => gate.pass(),
        _ => Ok(()),
    })
}

impl Backend for MemoryBackend {
    fn node_id(&self) -> &str {
        "test"
    }

    fn joined_at(&self) -> u64 {
        1
    }

    fn now_ms(&self) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }

    fn store(&self) -> &dyn Store {
        &self.store
    }

    async fn write(&self, op: WriteOp) -> Result<Result<WriteOutcome, WriteRejected>, StoreError> {
        let mut outcomes = self.store.write_batch(&[op], self.now_ms())?;
        Ok(outcomes.remove(0))
    }

    fn members(&self) -> Vec<MemberInfo> {
        Vec::new()
    }

    fn audit_entries(&self, _: u64, _: usize) -> Result<Option<Vec<AuditEntry>>, StoreError> {
        self.gate.pass()?;
        Ok(Some(Vec::new()))
    }

    fn verify_audit(&self) -> Result<Option<AuditVerdict>, StoreError> {
        self.gate.pass()?;
        Ok(Some(AuditVerdict::Intact {
            entries: 0,
            unkeyed: 0,
        }))
    }

    async fn create_backup(&self) -> Result<BackupInfo, StoreError> {
        Err(StoreError::Backend("no backups in memory".into()))
    }

    fn list_backups(&self) -> Result<Vec<BackupInfo>, StoreError> {
        self.gate.pass()?;
        Ok(Vec::new())
    }

    fn register_metrics(&self, _: &mut prometheus_client::registry::Registry) {}

    fn watch(&self) -> Option<tokio::sync::broadcast::Receiver<kvs_sync::Change>> {
        Some(tokio::sync::broadcast::channel(1).1)
    }
}

/// The API's and the store's settings of a test node; the default is a node's default
/// config with auth off (the black-box tests' `PLAIN`).
struct Setup {
    auth: Option<AuthConfig>,
    max_value_bytes: usize,
    history_enabled: bool,
    max_revisions: usize,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            auth: None,
            max_value_bytes: 1 << 20,
            history_enabled: true,
            max_revisions: StoreOptions::default().max_revisions,
        }
    }
}

/// An API over a fresh memory store, set up as `setup` says.
fn api(setup: Setup) -> Arc<Api<MemoryBackend>> {
    let options = StoreOptions {
        max_revisions: setup.max_revisions,
        ..StoreOptions::default()
    };
    let config = ApiConfig {
        max_value_bytes: setup.max_value_bytes,
        history_enabled: setup.history_enabled,
        default_permissions: 0xf31,
        version: "test".into(),
        auth: setup.auth,
        rate_limit: None,
    };
    Api::new(Arc::new(MemoryBackend::new(options)), config)
}

/// An API with auth on over an empty memory store, and its root token.
fn api_with_root() -> (Arc<Api<MemoryBackend>>, String) {
    let auth = AuthConfig::new("test-secret", false, false).expect("auth config");
    let root = auth.keys.root_token().expect("root token").token;
    let setup = Setup {
        auth: Some(auth),
        ..Setup::default()
    };
    (api(setup), root)
}

/// An API with auth on, its root user stored, and the root token.
async fn api_and_root() -> (Arc<Api<MemoryBackend>>, String) {
    let (api, root) = api_with_root();
    let root_user = crate::auth::User::root();
    api.put_record(crate::auth::user_key(&root_user.id), &root_user, None)
        .await
        .expect("root user");
    (api, root)
}

/// A put of `data` at `key` as the store takes it from a replica: no owner, no
/// permissions, no precondition.
fn replica_put(key: String, data: String) -> kvs_sync::WriteOp {
    kvs_sync::WriteOp {
        key,
        mutation: kvs_sync::Mutation::Put { data, ttl_ms: None },
        precondition: kvs_sync::Precondition::None,
        uuid: uuid::Uuid::new_v4(),
        origin_joined_at: 1,
        owner: None,
        group: None,
        permissions: 0,
        actor: None,
    }
}

/// An answer as a client reads it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    /// The body as JSON; panics when it is not.
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// The contract's `error.code`; panics when there is none.
    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {:?}", self.body))
            .to_owned()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    }
}

/// One request to `api` with a raw body and headers, as a client sends it.
async fn request(
    api: &Arc<Api<MemoryBackend>>,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = warp::test::request().method(method).path(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.reply(&api.filter()).await;
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: String::from_utf8(response.body().to_vec()).expect("a UTF-8 body"),
    }
}

async fn get(api: &Arc<Api<MemoryBackend>>, path: &str) -> Answer {
    request(api, "GET", path, None, &[]).await
}

async fn put(api: &Arc<Api<MemoryBackend>>, path: &str, body: &str) -> Answer {
    let json = [("content-type", "application/json")];
    request(api, "PUT", path, Some(body), &json).await
}

async fn delete(api: &Arc<Api<MemoryBackend>>, path: &str) -> Answer {
    request(api, "DELETE", path, None, &[]).await
}

/// One request with a JSON body and a bearer token; the status and the JSON body (`null`
/// when empty).
async fn call(
    api: &Arc<Api<MemoryBackend>>,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: &str,
) -> (u16, Value) {
    let body = body.map(|body| body.to_string());
    let bearer = format!("Bearer {token}");
    let answer = request(
        api,
        method,
        path,
        body.as_deref(),
        &[("authorization", &bearer)],
    )
    .await;
    let json = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
    (answer.status, json)
}

/// `call` that expects `status` and returns the body.
/// A token with scope read for the user `user_id` (a JSON string), issued by `root`.
async fn read_token(api: &Arc<Api<MemoryBackend>>, root: &str, user_id: &Value) -> String {
    let body = serde_json::json!({"user_id": user_id, "scopes": ["read"], "ttl": "1h"});
    let token = expect(api, ("POST", "/auth/tokens", Some(body)), root, 201).await;
    token["token"].as_str().expect("token").to_owned()
}

async fn expect(
    api: &Arc<Api<MemoryBackend>>,
    (method, path, body): (&str, &str, Option<Value>),
    token: &str,
    status: u16,
) -> Value {
    let (got, json) = call(api, method, path, body, token).await;
    assert_eq!(got, status, "{method} {path}: {json}");
    json
}
