//! In-process route tests: the whole [`Api`] over a [`MemoryStore`] backend, driven with
//! `warp::test`, for what a black-box test cannot set up (records as a replica merges
//! them, a store call that blocks until the test lets it go).

use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, ThreadId};

use kvs_sync::conformance::{Call, Hooked};
use kvs_sync::{
    AuditEntry, AuditVerdict, MemoryStore, Mutation, Precondition, Store, StoreError, StoreOptions,
    WriteOp, WriteOutcome, WriteRejected,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{Api, ApiConfig, AuthConfig};
use crate::auth::{User, user_key};
use crate::{Backend, BackupInfo, MemberInfo};

/// A node without IO: a memory store, the wall clock, no cluster, an empty audit trail,
/// no backups. Its calls that may block on a real node (scans, history, stats, the
/// merkle tree, the audit trail, the backup list) pass its [`Gate`] first.
struct MemoryBackend {
    store: Hooked<MemoryStore>,
    gate: Arc<Gate>,
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
fn gated_store(gate: Arc<Gate>) -> Hooked<MemoryStore> {
    Hooked::new(
        MemoryStore::new(StoreOptions::default()),
        move |call| match call {
            Call::List
            | Call::ListSince
            | Call::History
            | Call::Purge
            | Call::Stats
            | Call::Merkle
            | Call::LeafEntries
            | Call::VersionsAfter => gate.pass(),
            _ => Ok(()),
        },
    )
}

impl Backend for MemoryBackend {
    fn node_id(&self) -> &str {
        "test"
    }

    fn joined_at(&self) -> u64 {
        1
    }

    fn now_ms(&self) -> u64 {
        let since_epoch = std::time::UNIX_EPOCH.elapsed().unwrap_or_default();
        u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
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

    fn extra_metrics(&self, _: &mut String) {}
}

/// An API with auth on over an empty memory store, and its root token.
fn api_with_root() -> (Arc<Api<MemoryBackend>>, String) {
    let gate = Arc::new(Gate::new());
    let backend = Arc::new(MemoryBackend {
        store: gated_store(Arc::clone(&gate)),
        gate,
    });
    let auth = AuthConfig::new("test-secret", false, false).expect("auth config");
    let root = auth.keys.root_token().expect("root token").token;
    let config = ApiConfig {
        max_value_bytes: 1 << 20,
        history_enabled: true,
        default_permissions: 0xf31,
        version: "test".into(),
        auth: Some(auth),
        rate_limit: None,
    };
    (Api::new(backend, config), root)
}

/// One request; the status and the JSON body (`null` when empty).
async fn call(
    api: &Arc<Api<MemoryBackend>>,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: &str,
) -> (u16, Value) {
    let mut request = warp::test::request()
        .method(method)
        .path(path)
        .header("authorization", format!("Bearer {token}"));
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.reply(&api.filter()).await;
    let json = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    (response.status().as_u16(), json)
}

/// `call` that expects `status` and returns the body.
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

/// Issue 11, item 12: a group id left in a user record (a concurrent edit merged after
/// the group's delete) no longer grants the group's digit.
#[tokio::test]
async fn a_deleted_group_grants_nothing() {
    let (api, root) = api_with_root();
    let root_user = User::root();
    api.put_record(user_key(&root_user.id), &root_user, None)
        .await
        .expect("root user");
    let post = |path, body| ("POST", path, Some(body));
    let team = expect(
        &api,
        post("/auth/groups", json!({"name": "team"})),
        &root,
        201,
    )
    .await;
    let team = team["id"].as_str().expect("group id").to_owned();
    let body = json!({"name": "alice", "groups": [team]});
    let alice = expect(&api, post("/auth/users", body), &root, 201).await;
    let alice_record: User = serde_json::from_value(alice.clone()).expect("user record");
    let body = json!({"user_id": alice["id"], "scopes": ["read"], "ttl": "1h"});
    let token = expect(&api, post("/auth/tokens", body), &root, 201).await;
    let token = token["token"].as_str().expect("token").to_owned();
    expect(
        &api,
        ("PUT", "/kv/doc", Some(json!("team only"))),
        &root,
        201,
    )
    .await;
    let meta = json!({"group": team, "permissions": "f10"});
    expect(&api, ("PUT", "/meta/doc", Some(meta)), &root, 200).await;
    expect(&api, ("GET", "/kv/doc", None), &token, 200).await;

    let delete = format!("/auth/groups/{team}");
    expect(&api, ("DELETE", delete.as_str(), None), &root, 204).await;
    // A replica's concurrent rewrite of alice, still naming the group, wins afterwards.
    let stale = WriteOp {
        key: user_key(&alice_record.id),
        mutation: Mutation::Put {
            data: serde_json::to_string(&alice_record).expect("json"),
            ttl_ms: None,
        },
        precondition: Precondition::None,
        uuid: Uuid::new_v4(),
        origin_joined_at: 1,
        owner: None,
        group: None,
        permissions: 0,
        actor: None,
    };
    let written = api.backend.write(stale).await.expect("store");
    assert!(written.is_ok(), "the stale user record is stored");

    let (status, body) = call(&api, "GET", "/kv/doc", None, &token).await;
    assert_eq!(status, 403, "the deleted group still grants read: {body}");
}

/// Issue 11, item 13: every route whose store call may block (waiting for the durable
/// store's applier, walking the audit chain, reading the backup directory) waits off the
/// runtime. The test's runtime has one thread; while a request is held inside the store,
/// another request is answered and another task runs, and the held request then finishes.
#[tokio::test(flavor = "current_thread")]
async fn a_request_held_in_the_store_does_not_stall_the_runtime() {
    let (api, root) = api_with_root();
    let root_user = User::root();
    api.put_record(user_key(&root_user.id), &root_user, None)
        .await
        .expect("root user");
    expect(&api, ("PUT", "/kv/doc", Some(json!(1))), &root, 201).await;
    let held_routes = [
        "/kv",
        "/kv?prefix=d",
        "/kv?since=0",
        "/history/doc",
        "/metrics",
        "/sync",
        "/audit",
        "/audit/verify",
        "/admin/backups",
        "/auth/users",
        "/auth/groups",
    ];
    for path in held_routes {
        let (entered, release) = api.backend.gate.arm();
        let held = tokio::spawn({
            let (api, root) = (Arc::clone(&api), root.clone());
            async move { call(&api, "GET", path, None, &root).await }
        });
        entered
            .await
            .unwrap_or_else(|_| panic!("GET {path}: the store call blocked the runtime thread"));

        // The runtime's one thread is free: another request and another task run.
        expect(&api, ("GET", "/health", None), &root, 200).await;
        let ping = tokio::spawn(async { "pong" }).await.expect("ping task");
        assert_eq!(ping, "pong");
        assert!(!held.is_finished(), "GET {path} finished while held");

        release.send(()).expect("the held call waits");
        let (status, body) = held.await.expect("held request");
        assert_eq!(status, 200, "GET {path}: {body}");
    }
}

#[tokio::test]
async fn the_console_is_served_without_a_token_and_loads_nothing_from_elsewhere() {
    let (api, _root) = api_with_root();
    let response = warp::test::request()
        .method("GET")
        .path("/ui")
        .reply(&api.filter())
        .await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert_eq!(content_type, "text/html; charset=utf-8");
    let page = std::str::from_utf8(response.body()).unwrap();
    assert!(page.contains("<title>kvs console</title>"));
    for route in [
        "/members",
        "/sync",
        "/kv?",
        "/meta/",
        "/history/",
        "/health",
    ] {
        assert!(page.contains(route), "the console reads {route}");
    }
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "nothing from elsewhere"
    );
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    let posted = warp::test::request()
        .method("POST")
        .path("/ui")
        .reply(&api.filter())
        .await;
    assert_eq!(posted.status(), 405);
}
