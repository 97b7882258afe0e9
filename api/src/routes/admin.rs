//! The admin routes (scope `admin`): `POST /admin/backups` takes a consistent backup while
//! the node serves; `GET /admin/backups` lists the backups kept.

use warp::http::{Method, StatusCode};

use super::{Api, Handled, Request, json_response};
use crate::{ApiError, Backend};

impl<B: Backend> Api<B> {
    pub(super) async fn admin(&self, request: &Request<'_>, rest: &str) -> Handled {
        match (rest, request.method) {
            ("backups", &Method::POST) => {
                let info = self.backend.create_backup().await?;
                let body = serde_json::to_string(&info).map_err(ApiError::internal)?;
                Ok(json_response(StatusCode::CREATED, body))
            }
            ("backups", &Method::GET) => {
                let backups = self.blocking(|backend| Ok(backend.list_backups()?)).await?;
                let body = serde_json::json!({ "backups": backups });
                Ok(json_response(StatusCode::OK, body.to_string()))
            }
            ("backups", method) => Err(ApiError::method_not_allowed(method.as_str(), request.path)),
            _ => Err(ApiError::not_found(format!(
                "no route for {}",
                request.path
            ))),
        }
    }
}
