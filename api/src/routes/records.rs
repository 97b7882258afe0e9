//! The auth records as versioned entries of the reserved `_auth/...` keyspace: reading
//! them from the store and writing them through the node's normal write path, so that
//! they replicate like data.

use kvs_sync::{Mutation, Precondition, Store, WriteOp, WriteRejected};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::Api;
use crate::auth::{
    Deleted, GROUPS_PREFIX, Group, USERS_PREFIX, User, deleted_group_key, deleted_user_key,
    group_key, user_key,
};
use crate::{ApiError, Backend};

/// Page size when reading a whole record kind.
const PAGE: usize = 1000;

impl<B: Backend> Api<B> {
    /// The record at `key`, if it is live.
    pub(super) fn load<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ApiError> {
        load(self.backend.store(), key, self.backend.now_ms())
    }

    /// Every user that was not deleted (a scan of the store, off the runtime).
    pub(super) async fn users(&self) -> Result<Vec<User>, ApiError> {
        self.live_records().await
    }

    /// Every group that was not deleted (a scan of the store, off the runtime).
    pub(super) async fn groups(&self) -> Result<Vec<Group>, ApiError> {
        self.live_records().await
    }

    /// Every record of kind `T` that was not deleted (a scan of the store, off the
    /// runtime).
    async fn live_records<T: DeletedForGood>(&self) -> Result<Vec<T>, ApiError> {
        let now = self.backend.now_ms();
        self.blocking(move |backend| {
            let store = backend.store();
            let mut live = Vec::new();
            for record in load_all::<T>(store, T::PREFIX, now)? {
                if !was_deleted(store, &T::deleted_key(record.id()), now)? {
                    live.push(record);
                }
            }
            Ok(live)
        })
        .await
    }

    /// The record `id` of kind `T`, unless it is absent or was deleted.
    pub(super) fn live_record<T: DeletedForGood>(&self, id: &str) -> Result<Option<T>, ApiError> {
        let store = self.backend.store();
        let now = self.backend.now_ms();
        if was_deleted(store, &T::deleted_key(id), now)? {
            return Ok(None);
        }
        load(store, &T::key(id), now)
    }

    /// Writes `value` as the record at `key`, expiring after `ttl_ms` if given.
    pub(super) async fn put_record<T: Serialize>(
        &self,
        key: String,
        value: &T,
        ttl_ms: Option<u64>,
    ) -> Result<(), ApiError> {
        let data = serde_json::to_string(value).map_err(ApiError::internal)?;
        self.write_record(key, Mutation::Put { data, ttl_ms }).await
    }

    /// Deletes the record at `key` (absent already is fine).
    pub(super) async fn delete_record(&self, key: String) -> Result<(), ApiError> {
        self.write_record(key, Mutation::Delete).await
    }

    async fn write_record(&self, key: String, mutation: Mutation) -> Result<(), ApiError> {
        let op = WriteOp {
            key,
            mutation,
            precondition: Precondition::None,
            uuid: Uuid::new_v4(),
            origin_joined_at: self.backend.joined_at(),
            owner: None,
            group: None,
            permissions: 0,
            actor: super::current_actor(),
        };
        let written = self.backend.write(op).await;
        // Whatever happened, cached authentications may predate this record.
        self.callers.invalidate();
        match written? {
            Ok(_) | Err(WriteRejected::NotFound) => Ok(()),
            Err(WriteRejected::PreconditionFailed) => Err(ApiError::internal(
                "an unconditional record write was refused",
            )),
        }
    }
}

/// The record at `key` in `store`, if it is live at `now`.
fn load<T: DeserializeOwned>(
    store: &dyn Store,
    key: &str,
    now: u64,
) -> Result<Option<T>, ApiError> {
    let Some(version) = store.get(key)?.filter(|v| v.is_live(now)) else {
        return Ok(None);
    };
    let text = version.data.as_deref().unwrap_or("null");
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| ApiError::internal(format!("the record {key:?} is unreadable: {e}")))
}

/// A record kind whose deletion is kept for good (see [`Deleted`]): users and groups.
pub(super) trait DeletedForGood: DeserializeOwned + Send + 'static {
    /// Where the records of this kind live.
    const PREFIX: &'static str;
    /// The record's id.
    fn id(&self) -> &str;
    /// The storage key of record `id`.
    fn key(id: &str) -> String;
    /// The storage key of the record that `id` was deleted.
    fn deleted_key(id: &str) -> String;
}

impl DeletedForGood for User {
    const PREFIX: &'static str = USERS_PREFIX;
    fn id(&self) -> &str {
        &self.id
    }
    fn key(id: &str) -> String {
        user_key(id)
    }
    fn deleted_key(id: &str) -> String {
        deleted_user_key(id)
    }
}

impl DeletedForGood for Group {
    const PREFIX: &'static str = GROUPS_PREFIX;
    fn id(&self) -> &str {
        &self.id
    }
    fn key(id: &str) -> String {
        group_key(id)
    }
    fn deleted_key(id: &str) -> String {
        deleted_group_key(id)
    }
}

/// Whether the record that a user or group was deleted is at `marker` (see [`Deleted`]),
/// whatever the user's or group's own record says.
pub(super) fn was_deleted(store: &dyn Store, marker: &str, now: u64) -> Result<bool, ApiError> {
    Ok(load::<Deleted>(store, marker, now)?.is_some())
}

/// Every record under `prefix` in `store` that is live at `now`, in key order.
fn load_all<T: DeserializeOwned>(
    store: &dyn Store,
    prefix: &str,
    now: u64,
) -> Result<Vec<T>, ApiError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list(prefix, after.as_deref(), PAGE, now)?;
        for item in &page.items {
            out.extend(load::<T>(store, &item.key, now)?);
        }
        match page.items.last() {
            Some(last) if page.next.is_some() => after = Some(last.key.clone()),
            _ => return Ok(out),
        }
    }
}
