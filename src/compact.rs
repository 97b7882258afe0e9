//! `kvs compact CONFIG`: rewrites a stopped node's data file packed (every table rebuilt
//! in key order, no free pages; see `store/lmdb/pack.rs`), as `etcdctl defrag` does for
//! etcd, so that the disk a store takes after random inserts and deletions is given back.
//!
//! The node must be stopped: the command takes the data dir's lock, opens the store as
//! the node does (replaying its write-ahead log into LMDB), closes it, writes the packed
//! copy into `<data_dir>/compacting/`, and renames it over `data.mdb`. Until that rename
//! the old file is untouched, so a failure or a crash at any point leaves a complete
//! store (the node's next start, or the next `kvs compact`, removes a leftover
//! `compacting/`).

use std::path::Path;
use std::process::ExitCode;

use crate::backup::{DataDirLock, node_running};
use crate::config::Config;
use crate::private_files;
use crate::store::DurableStore;

/// Where the packed copy is written before it replaces `data.mdb`.
const STAGING_DIR: &str = "compacting";

/// Removes what a compaction cut short (a crash, a kill) left in `data_dir`, whose lock
/// the caller holds: the node at start, so that the partial copy does not hold the disk
/// until the next compaction. A failure is logged; the node runs without the space.
pub fn clear_cut_short(data_dir: &Path) {
    let staging = data_dir.join(STAGING_DIR);
    if staging.exists() {
        match std::fs::remove_dir_all(&staging) {
            Ok(()) => {
                tracing::warn!(dir = %staging.display(), "removed what a compaction cut short left")
            }
            Err(error) => {
                tracing::warn!(dir = %staging.display(), %error, "cannot remove what a compaction cut short left")
            }
        }
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// The data file's bytes before.
    pub before: u64,
    /// The data file's bytes after.
    pub after: u64,
    /// The keys a client sees, as `/sync` counts them.
    pub keys: u64,
}

/// Compacts the data file of the node of `config`, whose data dir is `data_dir`; the node
/// must be stopped. `Err` says why; the old file stays unless the error came after the
/// rename (removing `compacting/`, syncing the data dir).
pub fn compact(config: &Config, data_dir: &Path) -> Result<Compacted, String> {
    let data_file = data_dir.join("data.mdb");
    let before = std::fs::metadata(&data_file)
        .map_err(|e| format!("{}: {e}", data_file.display()))?
        .len();
    if node_running(data_dir) {
        return Err(format!(
            "a node is running on {}; stop it first",
            data_dir.display()
        ));
    }
    let _lock = DataDirLock::acquire(data_dir)?;
    let staging = data_dir.join(STAGING_DIR);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
    }
    private_files::create_dir(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
    let packed = pack(config, data_dir, &staging);
    if let Err(error) = &packed {
        // What a failed copy wrote (maybe much, on a full disk) goes; the old file stays.
        let _ = std::fs::remove_dir_all(&staging);
        if let Some((needed, free)) = crate::backup::room_short_for_a_copy(data_dir, data_dir) {
            return Err(format!(
                "{error}: the disk is too full for the packed copy (it needs up to {needed} \
                 bytes, the data file's size; {free} are free)"
            ));
        }
    }
    let (keys, after) = packed?;
    let packed = staging.join("data.mdb");
    std::fs::rename(&packed, &data_file).map_err(|e| format!("{}: {e}", data_file.display()))?;
    // The reader table of the old file; LMDB makes a new one at the next open.
    let _ = std::fs::remove_file(data_dir.join("lock.mdb"));
    std::fs::remove_dir_all(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
    std::fs::File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| format!("{}: {e}", data_dir.display()))?;
    Ok(Compacted {
        before,
        after,
        keys,
    })
}

/// Opens the store in `data_dir` as the node does, closes it (every write of its log is
/// then in LMDB, synced) and writes the packed copy into `staging`, private; returns the
/// keys it holds and its bytes.
fn pack(config: &Config, data_dir: &Path, staging: &Path) -> Result<(u64, u64), String> {
    let store = DurableStore::open(data_dir, config.store_options(), config.audit_key())
        .map_err(|e| format!("opening the store: {e}"))?;
    store
        .close()
        .map_err(|e| format!("closing the store: {e}"))?;
    let keys = store.lmdb().key_count().map_err(|e| e.to_string())?;
    let bytes = store
        .lmdb()
        .write_packed(staging)
        .map_err(|e| format!("writing the packed copy: {e}"))?;
    drop(store);
    let packed = staging.join("data.mdb");
    private_files::restrict(&packed).map_err(|e| format!("{}: {e}", packed.display()))?;
    Ok((keys, bytes))
}

/// `kvs compact CONFIG`: exit 0 with the sizes before and after, 1 when the node runs or
/// the compaction fails, 2 for a bad config.
pub fn run(arg: &str) -> ExitCode {
    let path = crate::config::config_path(arg);
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("kvs: {error}");
            return ExitCode::from(2);
        }
    };
    let data_dir = config.data_dir(&path);
    match compact(&config, &data_dir) {
        Ok(done) => {
            crate::stdout::line(format_args!(
                "compacted {}: {} -> {} bytes ({} keys)",
                data_dir.display(),
                done.before,
                done.after,
                done.keys
            ));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("kvs: compact failed: {error}");
            ExitCode::from(1)
        }
    }
}
