//! In-process route tests: the whole [`Api`] over a [`MemoryStore`] backend, driven with
//! `warp::test`, for what a black-box test cannot set up (records as a replica merges
//! them).

use std::sync::Arc;

use kvs_sync::{
    AuditEntry, AuditVerdict, MemoryStore, Mutation, Precondition, Store, StoreError, StoreOptions,
    WriteOp, WriteOutcome, WriteRejected,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Api, ApiConfig, AuthConfig};
use crate::auth::{User, user_key};
use crate::{Backend, BackupInfo, MemberInfo};

/// A node without IO: a memory store, the wall clock, no cluster, no audit, no backups.
struct MemoryBackend {
    store: MemoryStore,
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
        Ok(None)
    }

    fn verify_audit(&self) -> Result<Option<AuditVerdict>, StoreError> {
        Ok(None)
    }

    async fn create_backup(&self) -> Result<BackupInfo, StoreError> {
        Err(StoreError::Backend("no backups in memory".into()))
    }

    fn list_backups(&self) -> Result<Vec<BackupInfo>, StoreError> {
        Ok(Vec::new())
    }

    fn extra_metrics(&self, _: &mut String) {}
}

/// An API with auth on over an empty memory store, and its root token.
fn api_with_root() -> (Arc<Api<MemoryBackend>>, String) {
    let backend = Arc::new(MemoryBackend {
        store: MemoryStore::new(StoreOptions::default()),
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
