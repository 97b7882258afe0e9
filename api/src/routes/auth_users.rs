//! `/auth/users`: create, list, read, update and delete users.
//!
//! A user is `{"id","name","groups","created_at"}`; ids are UUIDs (`root` for the
//! bootstrap administrator, which can be neither renamed nor deleted). Deleting a user
//! makes every token issued to it fail at once (the user lookup of each request), for
//! good: a record that it was deleted is kept ([`Deleted`](crate::auth::Deleted)), so a concurrent rename or
//! group change elsewhere that outlives the delete does not bring it back.

use uuid::Uuid;
use warp::http::StatusCode;

use super::Api;
use super::Handled;
use super::auth_routes::{json_reply, no_content};
use crate::auth::{
    CreateUser, Deleted, ModelError, RecordKind, UpdateUser, User, deleted_user_key,
    plan_create_user, plan_delete_user, plan_update_user, user_key,
};
use crate::{ApiError, Backend};

impl<B: Backend> Api<B> {
    pub(super) async fn list_users(&self) -> Handled {
        let groups = self.groups().await?;
        let users: Vec<User> = self
            .users()
            .await?
            .iter()
            .map(|u| u.without_dangling_groups(&groups))
            .collect();
        json_reply(StatusCode::OK, &serde_json::json!({ "users": users }))
    }

    pub(super) async fn get_user(&self, id: &str) -> Handled {
        let user = self.user_record(id)?;
        json_reply(
            StatusCode::OK,
            &user.without_dangling_groups(&self.groups().await?),
        )
    }

    pub(super) async fn create_user(&self, request: CreateUser) -> Handled {
        let _guard = self.admin_lock.lock().await;
        let id = Uuid::new_v4().to_string();
        let now = self.backend.now_ms();
        let user = plan_create_user(
            &request,
            &id,
            now,
            &self.users().await?,
            &self.groups().await?,
        )?;
        self.put_record(user_key(&user.id), &user, None).await?;
        tracing::info!(user_id = %user.id, name = %user.name, "user created");
        json_reply(StatusCode::CREATED, &user)
    }

    pub(super) async fn update_user(&self, id: &str, request: UpdateUser) -> Handled {
        let _guard = self.admin_lock.lock().await;
        let user = plan_update_user(id, &request, &self.users().await?, &self.groups().await?)?;
        // A change that names nothing to change writes nothing (no record, no audit entry).
        if !request.names_nothing() {
            self.put_record(user_key(&user.id), &user, None).await?;
        }
        json_reply(StatusCode::OK, &user)
    }

    pub(super) async fn delete_user(&self, id: &str) -> Handled {
        let _guard = self.admin_lock.lock().await;
        plan_delete_user(id, &self.users().await?)?;
        // The record that it was deleted first: from then on the user is gone, whatever
        // happens to its user record.
        let deleted = Deleted {
            id: id.to_owned(),
            deleted_at: self.backend.now_ms(),
        };
        self.put_record(deleted_user_key(id), &deleted, None)
            .await?;
        self.delete_record(user_key(id)).await?;
        tracing::info!(user_id = %id, "user deleted");
        Ok(no_content())
    }

    /// The user `id`, or `404`.
    fn user_record(&self, id: &str) -> Result<User, ApiError> {
        self.live_record::<User>(id)?.ok_or_else(|| {
            ModelError::NotFound {
                kind: RecordKind::User,
                id: id.chars().take(64).collect(),
            }
            .into()
        })
    }
}
