//! `/auth/groups`: create, list, read, update and delete groups.
//!
//! A group is served as `{"id","name","members","created_at"}`; its members are stored
//! in the user records (see `crate::auth` model docs), so a membership change rewrites
//! the users concerned and the group's view is derived from them. A deleted group stays
//! deleted: a record that it was deleted is kept ([`Deleted`]), so a concurrent rename
//! or membership change elsewhere that outlives the delete does not bring it back.

use uuid::Uuid;
use warp::http::StatusCode;

use super::Api;
use super::Handled;
use super::auth_routes::{json_reply, no_content};
use crate::auth::{
    CreateGroup, Deleted, Group, GroupPlan, GroupView, ModelError, RecordKind, UpdateGroup,
    deleted_group_key, group_key, plan_create_group, plan_delete_group, plan_update_group,
    user_key,
};
use crate::{ApiError, Backend};

impl<B: Backend> Api<B> {
    pub(super) async fn list_groups(&self) -> Handled {
        let users = self.users().await?;
        let groups: Vec<GroupView> = self
            .groups()
            .await?
            .iter()
            .map(|g| GroupView::of(g, &users))
            .collect();
        json_reply(StatusCode::OK, &serde_json::json!({ "groups": groups }))
    }

    pub(super) async fn get_group(&self, id: &str) -> Handled {
        json_reply(StatusCode::OK, &self.group_view(id).await?)
    }

    pub(super) async fn create_group(&self, request: CreateGroup) -> Handled {
        let _guard = self.admin_lock.lock().await;
        let id = Uuid::new_v4().to_string();
        let now = self.backend.now_ms();
        let plan = plan_create_group(
            &request,
            &id,
            now,
            &self.users().await?,
            &self.groups().await?,
        )?;
        self.apply_group_plan(&plan).await?;
        tracing::info!(group_id = %id, name = %plan.group.name, "group created");
        json_reply(StatusCode::CREATED, &self.group_view(&id).await?)
    }

    pub(super) async fn update_group(&self, id: &str, request: UpdateGroup) -> Handled {
        let _guard = self.admin_lock.lock().await;
        let plan = plan_update_group(id, &request, &self.users().await?, &self.groups().await?)?;
        // A change that names nothing to change writes nothing (no record, no audit entry).
        if !request.names_nothing() {
            self.apply_group_plan(&plan).await?;
        }
        json_reply(StatusCode::OK, &self.group_view(id).await?)
    }

    pub(super) async fn delete_group(&self, id: &str) -> Handled {
        let _guard = self.admin_lock.lock().await;
        let users = plan_delete_group(id, &self.users().await?, &self.groups().await?)?;
        // The record that it was deleted first: from then on the group grants nothing,
        // whatever happens to its record or to user records that name it.
        let deleted = Deleted {
            id: id.to_owned(),
            deleted_at: self.backend.now_ms(),
        };
        self.put_record(deleted_group_key(id), &deleted, None)
            .await?;
        for user in &users {
            self.put_record(user_key(&user.id), user, None).await?;
        }
        self.delete_record(group_key(id)).await?;
        tracing::info!(group_id = %id, "group deleted");
        Ok(no_content())
    }

    /// Writes the group record, then the user records whose membership changed.
    async fn apply_group_plan(&self, plan: &GroupPlan) -> Result<(), ApiError> {
        self.put_record(group_key(&plan.group.id), &plan.group, None)
            .await?;
        for user in &plan.users {
            self.put_record(user_key(&user.id), user, None).await?;
        }
        Ok(())
    }

    /// The served form of group `id`, or `404`.
    async fn group_view(&self, id: &str) -> Result<GroupView, ApiError> {
        let group = self.live_record::<Group>(id)?.ok_or_else(|| {
            ApiError::from(ModelError::NotFound {
                kind: RecordKind::Group,
                id: id.chars().take(64).collect(),
            })
        })?;
        Ok(GroupView::of(&group, &self.users().await?))
    }
}
