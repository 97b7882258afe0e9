//! Root bootstrap: the `root` user, its token record and `<data_dir>/root.token`.
//!
//! The root user record and the root token are pure functions of `jwt_secret` (see
//! `crate::auth`), so every node of a cluster writes the same record and the same file:
//! there is one root whichever node starts first, and each node's `root.token` works on
//! every node. The token is written only to the file (mode 0600, the bare token and a
//! newline); the log shows its path and a fingerprint, never the token.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use super::Api;
use crate::auth::{
    ROOT_USER_ID, Scope, TokenRecord, User, constant_time_eq, fingerprint, token_key, user_key,
};
use crate::{ApiError, Backend};

/// The file name of the root token in the data dir.
const ROOT_TOKEN_FILE: &str = "root.token";

impl<B: Backend> Api<B> {
    /// With auth on: writes the root user and its token record if absent, and
    /// `<data_dir>/root.token` if missing or stale (another `jwt_secret`). A no-op with
    /// auth off.
    pub async fn bootstrap_auth(&self, data_dir: &Path) -> Result<(), ApiError> {
        let Some(auth) = &self.config.auth else {
            return Ok(());
        };
        let root = auth.keys.root_token()?;
        if self.load::<User>(&user_key(ROOT_USER_ID))?.is_none() {
            self.put_record(user_key(ROOT_USER_ID), &User::root(), None)
                .await?;
            tracing::info!("root user created");
        }
        if self.load::<TokenRecord>(&token_key(&root.jti))?.is_none() {
            // issued_at 0, like the token's iat: every node writes the same record.
            self.record_token(&root, ROOT_USER_ID, &[Scope::Admin], 0)
                .await?;
        }
        let path = data_dir.join(ROOT_TOKEN_FILE);
        let current = std::fs::read(&path).ok();
        let expected = format!("{}\n", root.token);
        if current.is_some_and(|text| constant_time_eq(&text, expected.as_bytes())) {
            return keep_private(&path)
                .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())));
        }
        write_private(&path, expected.as_bytes())
            .map_err(|e| ApiError::internal(format!("writing {}: {e}", path.display())))?;
        tracing::info!(
            path = %path.display(),
            fingerprint = %fingerprint(root.token.as_bytes()),
            "root token written; send it as Authorization: Bearer <token>"
        );
        Ok(())
    }
}

/// Makes the root token file at `path` 0600 again, with a warning, where its mode lets
/// group or others read it (it is an admin credential of the whole cluster; found by a
/// black-box audit: a node started with it 0644 and said nothing).
fn keep_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "the root token was readable by group or others; made 0600"
        );
    }
    Ok(())
}

/// Writes `bytes` to `path` with mode 0600, atomically (a temp file renamed over it).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("token.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}
