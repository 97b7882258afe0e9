//! The audit trail of the durable store: at start, the chain's recorded head is
//! reconciled with the stored chain (see `kvs_sync::audit_head`: where the chain goes on,
//! what to warn about) and recorded again; its copy outside LMDB, [`HEAD_FILE`] in the
//! data dir (mode 0600), is rewritten after every commit that adds entries, and both
//! copies are checked by every verification.
//!
//! The copy in LMDB's `meta` table is committed with the entries, so it always matches
//! the stored chain; the file is written just after (it may lag behind after a crash,
//! never run ahead of the chain once the log is replayed). A data file swapped for an
//! older one (a backup, a copy) still meets the newer head in the file; both rewound
//! together to an older copy of themselves is what no local check can find (see the
//! limits in `kvs_sync`'s audit module).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use kvs_sync::audit_head::reconcile;
use kvs_sync::{AuditKey, StoreError};

use super::staging::AuditHead;
use crate::private_files;
use crate::store::LmdbStore;
use crate::store::lmdb::{AuditSeal, HEAD_FILE, META_COPY};

/// The audit trail's key and the head file, while the trail is on.
pub(super) struct Audit {
    pub(super) key: AuditKey,
    pub(super) file: PathBuf,
}

/// What the applier needs to record the head.
pub(super) struct HeadRecorder {
    pub(super) seal: AuditSeal,
    pub(super) file: PathBuf,
}

impl HeadRecorder {
    /// Writes the head's copy outside LMDB after a commit recorded `sealed` in it; a
    /// failure is logged (the file then lags, which verification allows).
    pub(super) fn committed(&self, sealed: &[u8]) {
        if let Err(error) = write_head_file(&self.file, sealed) {
            tracing::warn!(%error, file = %self.file.display(), "writing the audit head failed");
        }
    }
}

/// The sealed head in `path`, `None` when there is no such file.
pub(super) fn read_head_file(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(StoreError::Backend(format!(
            "reading {}: {error}",
            path.display()
        ))),
    }
}

/// Replaces `path` with `bytes` atomically (a synced temp file renamed over it), 0600.
pub(crate) fn write_head_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = path.with_extension("head.tmp");
    let mut file = private_files::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)
}

/// Opens the audit trail of the store in `dir` (after the log was replayed): reconciles
/// the recorded head with the chain, records the result in both places, and returns
/// where the chain continues and how later commits record the head.
pub(super) fn open(
    lmdb: &LmdbStore,
    dir: &Path,
    key: &AuditKey,
) -> Result<(Audit, AuditHead, HeadRecorder), StoreError> {
    if key.is_weak() {
        // A supported setup (the node keeps a generated secret in the data dir), so not a
        // warning at every start; the README says what it leaves open.
        tracing::debug!(
            "cluster_secret is not in the config, so the audit chain's key is not secret: \
             whoever can write the data dir can rewrite the audit trail undetected"
        );
    }
    let file = dir.join(HEAD_FILE);
    let file_copy = read_head_file(&file)?;
    let meta_copy = lmdb.audit_head()?;
    let last = lmdb.last_audit_entry()?;
    let copies = [
        (META_COPY, meta_copy.as_deref()),
        (HEAD_FILE, file_copy.as_deref()),
    ];
    let entry_at = |seq| lmdb.audit_entry(seq);
    let reconciled = reconcile(key, copies, last.as_ref(), entry_at, true)?;
    for note in &reconciled.notes {
        tracing::warn!("{note}");
    }
    let head = reconciled.head;
    let sealed = head.seal(key);
    write_head_file(&file, &sealed)
        .map_err(|e| StoreError::Backend(format!("writing {}: {e}", file.display())))?;
    lmdb.set_audit_head(&sealed)?;
    let next = AuditHead {
        next_seq: head.seq + 1,
        last_hash: head.hash.clone(),
        key: key.clone(),
    };
    let recorder = HeadRecorder {
        seal: AuditSeal {
            key: key.clone(),
            head,
        },
        file: file.clone(),
    };
    let audit = Audit {
        key: key.clone(),
        file,
    };
    Ok((audit, next, recorder))
}

impl Audit {
    /// Checks the chain against both copies of its head.
    pub(super) fn verify(&self, lmdb: &LmdbStore) -> Result<kvs_sync::AuditVerdict, StoreError> {
        // Read before LMDB: the file is written after the commits it follows, so it never
        // runs ahead of what the read transaction sees.
        let file_copy = read_head_file(&self.file)?;
        lmdb.verify_audit(&self.key, file_copy.as_deref())
    }
}
