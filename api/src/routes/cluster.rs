//! The cluster and operations routes: `/health`, `/members`, `/sync`, `/metrics`,
//! `/openapi.json`.
//!
//! While `auth_enabled`, all but `/health` need a token with the `read` scope (anonymous
//! reads cover keys only); `/health` is open.
//! `/openapi.json` is `api/openapi.json`; while `auth_enabled` is false, without its
//! `security` (no request needs a token then) and without the `/auth/...` paths.

use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response as WarpResponse;

use super::{Api, Caller, Handled, json_response};
use kvs_sync::StoreError;

use crate::Backend;
use crate::auth::Operation;
use crate::metrics;

/// The OpenAPI 3 document of the whole API.
const OPENAPI: &str = include_str!("../../openapi.json");

impl<B: Backend> Api<B> {
    pub(super) fn health(&self) -> Handled {
        let members = self
            .backend
            .members()
            .iter()
            .filter(|m| m.state == "alive" || m.state == "suspect")
            .count();
        let status = if self.backend.syncing() {
            "syncing"
        } else {
            "ok"
        };
        let body = serde_json::json!({
            "status": status,
            "node_id": self.backend.node_id(),
            "version": self.config.version,
            "members": members,
        });
        Ok(json_response(StatusCode::OK, body.to_string()))
    }

    pub(super) fn members(&self, caller: &Caller) -> Handled {
        self.authorize(caller, Operation::Observe)?;
        let body = serde_json::json!({ "members": self.backend.members() });
        Ok(json_response(StatusCode::OK, body.to_string()))
    }

    pub(super) async fn sync(&self, caller: &Caller) -> Handled {
        self.authorize(caller, Operation::Observe)?;
        let status = self.blocking(|backend| Ok(backend.sync_status()?)).await?;
        let body =
            serde_json::to_string(&status).map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(json_response(StatusCode::OK, body))
    }

    /// `GET /openapi.json`.
    pub(super) fn openapi(&self, caller: &Caller) -> Handled {
        self.authorize(caller, Operation::Observe)?;
        let document = if self.config.auth.is_some() {
            OPENAPI
        } else {
            OPENAPI_NO_AUTH.as_str()
        };
        Ok(json_response(StatusCode::OK, document.to_owned()))
    }

    pub(super) async fn metrics(&self, caller: &Caller) -> Handled {
        self.authorize(caller, Operation::Observe)?;
        let mut registry = Registry::default();
        self.metrics.register(&mut registry);
        let registry = self
            .blocking(move |backend| {
                let stats = backend.store().stats()?;
                registry.register(
                    "kvs_store_keys",
                    "Live keys (outside the reserved _ prefix)",
                    ConstGauge::new(stats.keys),
                );
                registry.register(
                    "kvs_store_entries",
                    "Every entry held: live keys, tombstones not yet purged, reserved entries",
                    ConstGauge::new(stats.entries),
                );
                registry.register(
                    "kvs_store_bytes",
                    "Bytes the store occupies",
                    ConstGauge::new(stats.bytes),
                );
                backend.register_metrics(&mut registry);
                Ok(registry)
            })
            .await?;
        let mut response = json_response(StatusCode::OK, metrics::encode(&registry));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        );
        Ok(response)
    }
}

/// The document as served with `auth_enabled: false`: no operation needs a token, so it
/// declares no security, and the `/auth/...` endpoints, which answer `404` to everything
/// then, are left out.
static OPENAPI_NO_AUTH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let mut document: serde_json::Value =
        serde_json::from_str(OPENAPI).expect("api/openapi.json is JSON");
    if let Some(root) = document.as_object_mut() {
        root.remove("security");
    }
    if let Some(paths) = document["paths"].as_object_mut() {
        paths.retain(|path, _| !path.starts_with("/auth/"));
    }
    if let Some(components) = document["components"].as_object_mut() {
        components.remove("securitySchemes");
    }
    document.to_string()
});

/// The web console, embedded at build time: one page that reads `/health`, `/members`,
/// `/sync` and the key routes with the token pasted into it (kept in the tab's session
/// storage only); it loads nothing from elsewhere.
const CONSOLE: &str = include_str!("../../ui/console.html");

/// `GET /ui`: the web console.
pub(super) fn console() -> WarpResponse {
    let mut response = WarpResponse::new(CONSOLE.into());
    let headers = response.headers_mut();
    headers.insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        warp::http::header::CONTENT_SECURITY_POLICY,
        warp::http::HeaderValue::from_static(
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             img-src 'self' data:",
        ),
    );
    response
}
