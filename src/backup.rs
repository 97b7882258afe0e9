//! Backups: consistent snapshots of a node's data, taken while it serves
//! (`POST /admin/backups`, scheduled ones, `kvs backup`) and restored into a stopped
//! node's data dir (`kvs restore`).
//!
//! A backup is a packed LMDB data file (every table rebuilt in key order, see
//! `store/lmdb/pack.rs`), `<data_dir>/backups/<name>.mdb`, holding every write
//! acknowledged before it started. A running node holds an exclusive lock on
//! `<data_dir>/node.lock`, which is how `kvs backup` and `kvs restore` tell whether it
//! runs. The data dir and the backups dir are created 0700, backups and restored data
//! 0600 (see [`crate::private_files`]). A restore also puts back the audit chain's
//! recorded head that the backup holds, in its copy outside LMDB (`audit.head`), so that
//! the restored, shorter chain is not taken for one cut short. A restore keeps the
//! identity of the node whose data dir it restores into (see [`IDENTITY_TEXTS`]): a
//! backup of one node restored into another does not make it a second copy of the first.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use kvs_api::BackupInfo;
use kvs_sync::{StoreError, StoreOptions};

use crate::node::now_ms;
use crate::private_files;
use crate::store::{DurableStore, LmdbStore, Seal};

/// The lock a running node holds on its data dir.
pub struct DataDirLock {
    _file: File,
}

fn lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join("node.lock")
}

impl DataDirLock {
    /// Takes the data dir's lock; `Err` names why (another process holds it, or IO).
    pub fn acquire(data_dir: &Path) -> Result<Self, String> {
        if data_dir.exists() && !data_dir.is_dir() {
            return Err(format!("{} is not a directory", data_dir.display()));
        }
        private_files::create_dir(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
        let path = lock_path(data_dir);
        let file = private_files::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(format!(
                "{} is in use by another running kvs node",
                data_dir.display()
            )),
            Err(TryLockError::Error(e)) => Err(format!("{}: {e}", path.display())),
        }
    }
}

/// The file where a running node records the HTTP address it listens on.
pub fn http_addr_file(data_dir: &Path) -> PathBuf {
    data_dir.join("http.addr")
}

/// Whether a node runs on `data_dir` (it holds the lock).
pub fn node_running(data_dir: &Path) -> bool {
    File::open(lock_path(data_dir))
        .is_ok_and(|file| matches!(file.try_lock(), Err(TryLockError::WouldBlock)))
}

/// Where a data dir keeps its backups.
pub fn backups_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("backups")
}

/// Held while a backup is taken: backups started together (two `POST /admin/backups` in
/// the same millisecond, or one beside a scheduled backup) run one after the other, each
/// under a name of its own, instead of sharing a name and the packing file.
static TAKING: Mutex<()> = Mutex::new(());

/// Takes a backup of `store` into `data_dir`'s backups, named by the time.
pub fn take(store: &DurableStore, data_dir: &Path) -> Result<BackupInfo, StoreError> {
    let _taking = TAKING.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = backups_dir(data_dir);
    private_files::create_dir(&dir)
        .map_err(|e| StoreError::Backend(format!("{}: {e}", dir.display())))?;
    let created_at = now_ms();
    let mut name = format!("backup-{created_at}");
    let mut n = 1;
    while dir.join(format!("{name}.mdb")).exists() {
        n += 1;
        name = format!("backup-{created_at}-{n}");
    }
    let file = dir.join(format!("{name}.mdb"));
    // Created private first: the copy then keeps the file's mode.
    private_files::create(&file)
        .map_err(|e| StoreError::Backend(format!("{}: {e}", file.display())))?;
    let (bytes, keys) = store.backup_to(&file).map_err(|error| {
        // A backup that failed leaves no file behind (they piled up, one per attempt,
        // empty, and no listing showed them); a failure for want of room says so.
        let _ = std::fs::remove_file(&file);
        short_of_room(data_dir, &dir).unwrap_or(error)
    })?;
    let info = BackupInfo {
        name,
        bytes,
        keys,
        created_at,
    };
    // What listings show, kept beside the file so that listing opens no backup.
    let sidecar = dir.join(format!("{}.json", info.name));
    let json = serde_json::to_vec(&info).map_err(|e| StoreError::Backend(e.to_string()))?;
    private_files::write_new(&sidecar, &json)
        .map_err(|e| StoreError::Backend(format!("{}: {e}", sidecar.display())))?;
    Ok(info)
}

/// Why a backup into `dir` failed, when the cause is a disk too full to hold it: less
/// room left there than the data file takes (LMDB's copy reports a full disk as an
/// input/output error).
fn short_of_room(data_dir: &Path, dir: &Path) -> Option<StoreError> {
    let (needed, free) = room_short_for_a_copy(data_dir, dir)?;
    Some(StoreError::Full(format!(
        "a backup needs up to {needed} bytes and {} has {free} free",
        dir.display()
    )))
}

/// `(needed, free)` when `dir` has less room than a copy of `data_dir`'s data file could
/// take (its size): what a backup or a compaction that failed tells for a cause, since
/// LMDB's copy reports a full disk as an input/output error.
pub(crate) fn room_short_for_a_copy(data_dir: &Path, dir: &Path) -> Option<(u64, u64)> {
    let needed = std::fs::metadata(data_dir.join("data.mdb")).ok()?.len();
    let free = crate::store::free_bytes(dir).ok()?;
    (free < needed).then_some((needed, free))
}

/// The backups in `data_dir`, oldest first (from the records `take` keeps beside them).
pub fn list(data_dir: &Path) -> Result<Vec<BackupInfo>, StoreError> {
    let Ok(entries) = std::fs::read_dir(backups_dir(data_dir)) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<BackupInfo> = entries
        .flatten()
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "json"))
        .filter_map(|entry| serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok())
        .collect();
    out.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
    Ok(out)
}

/// Removes the oldest backups beyond `keep`.
pub fn prune(data_dir: &Path, keep: usize) -> Result<(), StoreError> {
    let all = list(data_dir)?;
    for old in all.iter().take(all.len().saturating_sub(keep)) {
        for ext in ["mdb", "json"] {
            let path = backups_dir(data_dir).join(format!("{}.{ext}", old.name));
            std::fs::remove_file(&path)
                .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        }
    }
    Ok(())
}

/// The seal of backup `file` (see `store/lmdb/seal.rs`). A file without one is refused:
/// only a whole walk of its pages could tell it intact, and LMDB reading a damaged page
/// can crash the process.
fn seal_of(file: &Path) -> Result<Seal, String> {
    let shown = file.display();
    match crate::store::read_seal(file) {
        Ok(Some(seal)) => Ok(seal),
        Ok(None) => {
            // A sealed backup cut short has lost its seal: say what is wrong with it.
            crate::store::check_data_file(file)
                .map_err(|e| format!("{shown} is not a kvs backup: {e}"))?;
            Err(format!(
                "{shown} is not a kvs backup: it carries no checksum (backups of kvs carry one \
                 at their end since 2026-12-07; one made earlier restores with the kvs that \
                 made it)"
            ))
        }
        Err(error) => Err(format!("{shown} is damaged: {error}")),
    }
}

/// Copies the data file of backup `file` to `to`, checking the bytes copied against
/// `seal` (the file is read once: the bytes checked are the bytes restored).
fn copy_checked(file: &Path, to: &Path, seal: &Seal) -> Result<(), String> {
    let mut check = seal.check();
    copy_with_progress(file, to, "restoring", seal.data_len, &mut |bytes| {
        check.update(bytes);
    })
    .map_err(|e| format!("{}: {e}", to.display()))?;
    check
        .finish()
        .map_err(|e| format!("{} is damaged: {e}", file.display()))
}

/// The key count and the audit chain's head it recorded (sealed), if any, of the store in
/// `dir`, which must be a whole LMDB file with kvs's tables.
fn backup_facts(dir: &Path) -> Result<(u64, Option<Vec<u8>>), String> {
    crate::store::check_data_file(&dir.join("data.mdb"))?;
    // Opening it as a store would create the tables of an empty or foreign file.
    if !crate::store::holds_kvs_store(dir).map_err(|e| e.to_string())? {
        return Err("an LMDB file without the tables of a kvs store".into());
    }
    let store = LmdbStore::open(dir, StoreOptions::default()).map_err(|e| e.to_string())?;
    let keys = store.key_count().map_err(|e| e.to_string())?;
    Ok((keys, store.audit_head().map_err(|e| e.to_string())?))
}

/// The facts of the `meta` table that make a node itself rather than describe its data:
/// its generated id and secrets, and the membership facts of that id (when it joined,
/// its incarnation). A restore keeps the target's (the node of the data dir), where it
/// has them: a backup of node A restored into node B's data dir made B start as A (same
/// id, A's secrets), and the cluster split without a word (found by a black-box audit).
/// Into an empty data dir (a node rebuilt from its own backup), the backup's stay.
const IDENTITY_TEXTS: [&str; 3] = ["node_id", "cluster_secret", "jwt_secret"];
const IDENTITY_NUMBERS: [&str; 2] = ["joined_at", "incarnation"];

/// A node's identity facts, as [`IDENTITY_TEXTS`] and [`IDENTITY_NUMBERS`] name them.
#[derive(Debug, Default, PartialEq, Eq)]
struct Identity {
    texts: Vec<(&'static str, String)>,
    numbers: Vec<(&'static str, u64)>,
}

impl Identity {
    /// The identity the store in `dir` holds (empty when it holds no store).
    fn of(dir: &Path) -> Result<Self, String> {
        let data = dir.join("data.mdb");
        if !data.is_file() {
            return Ok(Self::default());
        }
        // A damaged file is checked before LMDB maps it (see `check_data_file`).
        crate::store::check_data_file(&data)?;
        if !crate::store::holds_kvs_store(dir).map_err(|e| e.to_string())? {
            return Ok(Self::default());
        }
        let store = LmdbStore::open(dir, StoreOptions::default()).map_err(|e| e.to_string())?;
        let mut identity = Self::default();
        for name in IDENTITY_TEXTS {
            if let Some(text) = store.meta_text(name).map_err(|e| e.to_string())? {
                identity.texts.push((name, text));
            }
        }
        for name in IDENTITY_NUMBERS {
            if let Some(number) = store.meta_u64(name).map_err(|e| e.to_string())? {
                identity.numbers.push((name, number));
            }
        }
        Ok(identity)
    }

    /// Writes these facts into the store in `dir`, over the ones it holds.
    fn give_to(&self, dir: &Path) -> Result<(), String> {
        let store = LmdbStore::open(dir, StoreOptions::default()).map_err(|e| e.to_string())?;
        for (name, text) in &self.texts {
            store.set_meta_text(name, text).map_err(|e| e.to_string())?;
        }
        store
            .set_meta_u64s(&self.numbers)
            .map_err(|e| e.to_string())?;
        store.sync().map_err(|e| e.to_string())
    }
}

/// Replaces `data_dir`'s data with backup `file`; the node must be stopped. The
/// write-ahead log is cleared, so the node starts exactly at the backup's state, as the
/// node it was (its identity is kept, see [`IDENTITY_TEXTS`]).
pub fn restore(data_dir: &Path, file: &Path) -> Result<u64, String> {
    if node_running(data_dir) {
        return Err(format!(
            "a node is running on {}; stop it first",
            data_dir.display()
        ));
    }
    let seal = seal_of(file)?;
    let _lock = DataDirLock::acquire(data_dir)?;
    // A data dir whose store cannot be read (the reason to restore, often) has no
    // identity to keep: the node takes the backup's, and is told so.
    let identity = Identity::of(data_dir).unwrap_or_else(|error| {
        eprintln!(
            "kvs: warning: the store in {} cannot be read ({error}); the restored node takes \
             the node id and secrets of the backup's node",
            data_dir.display()
        );
        Identity::default()
    });
    let staging = data_dir.join("restoring");
    let staged = staging.join("data.mdb");
    let put_in_place = || -> Result<(u64, Option<Vec<u8>>), String> {
        // What a restore that was killed midway left.
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
        }
        private_files::create_dir(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
        copy_checked(file, &staged, &seal)?;
        let facts = backup_facts(&staging)
            .map_err(|e| format!("{} is not a kvs backup: {e}", file.display()))?;
        identity
            .give_to(&staging)
            .map_err(|e| format!("{}: keeping the node's identity: {e}", staged.display()))?;
        let wal = data_dir.join("wal");
        if wal.exists() {
            std::fs::remove_dir_all(&wal).map_err(|e| format!("{}: {e}", wal.display()))?;
        }
        let _ = std::fs::remove_file(data_dir.join("lock.mdb"));
        std::fs::rename(&staged, data_dir.join("data.mdb")).map_err(|e| e.to_string())?;
        std::fs::remove_dir_all(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
        Ok(facts)
    };
    let (keys, audit_head) = match put_in_place() {
        Ok(facts) => facts,
        Err(error) => {
            // The copy (as large as the backup) does not stay behind.
            let _ = std::fs::remove_dir_all(&staging);
            return Err(error);
        }
    };
    let head_file = data_dir.join(crate::store::AUDIT_HEAD_FILE);
    let restored_head = match audit_head {
        Some(sealed) => crate::store::write_audit_head(&head_file, &sealed),
        None => std::fs::remove_file(&head_file).or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        }),
    };
    restored_head.map_err(|e| format!("{}: {e}", head_file.display()))?;
    Ok(keys)
}

/// The config of CONFIG (which must exist) and its data dir; `None` after printing why.
fn load(arg: &str) -> Option<(crate::config::Config, PathBuf)> {
    let path = crate::config::config_path(arg);
    match crate::config::Config::load(&path) {
        Ok(config) => {
            let data_dir = config.data_dir(&path);
            Some((config, data_dir))
        }
        Err(error) => {
            eprintln!("kvs: {error}");
            None
        }
    }
}

/// `kvs backup CONFIG [--out FILE] [--token TOKEN]`: through the running node's API when
/// it runs (so that it keeps serving; with `token`, else the data dir's `root.token`),
/// else straight from its data dir.
pub fn run_backup(arg: &str, out: Option<&Path>, token: Option<&str>) -> std::process::ExitCode {
    use std::process::ExitCode;
    let Some((config, data_dir)) = load(arg) else {
        return ExitCode::from(2);
    };
    let watching = BackupProgress::follow(&backups_dir(&data_dir));
    let taken = if node_running(&data_dir) {
        backup_through_api(&config, &data_dir, token)
    } else {
        backup_offline(&config, &data_dir)
    };
    watching.finish();
    let info = match taken {
        Ok(info) => info,
        Err(error) => {
            eprintln!("kvs: backup failed: {error}");
            return ExitCode::from(1);
        }
    };
    let source = backups_dir(&data_dir).join(format!("{}.mdb", info.name));
    let target = out.map_or_else(|| source.clone(), Path::to_path_buf);
    if target != source
        && let Err(error) =
            copy_with_progress(&source, &target, "backing up", info.bytes, &mut |_| {})
    {
        eprintln!(
            "kvs: writing {}: {error} (the backup is taken and kept at {})",
            target.display(),
            source.display()
        );
        return ExitCode::from(1);
    }
    crate::stdout::line(format_args!(
        "backup {}: {} bytes, {} keys -> {}",
        info.name,
        info.bytes,
        info.keys,
        target.display()
    ));
    ExitCode::SUCCESS
}

fn backup_offline(config: &crate::config::Config, data_dir: &Path) -> Result<BackupInfo, String> {
    // A node that never started has nothing to back up; its data dir is not made here.
    let data_file = data_dir.join("data.mdb");
    if !data_file.exists() {
        return Err(format!(
            "{} holds no data ({} is missing): has the node ever started?",
            data_dir.display(),
            data_file.display()
        ));
    }
    let _lock = DataDirLock::acquire(data_dir)?;
    let store = DurableStore::open(data_dir, config.store_options(), config.audit_key())
        .map_err(|e| e.to_string())?;
    take(&store, data_dir).map_err(|e| e.to_string())
}

fn backup_through_api(
    config: &crate::config::Config,
    data_dir: &Path,
    token: Option<&str>,
) -> Result<BackupInfo, String> {
    let addr = std::fs::read_to_string(http_addr_file(data_dir))
        .map(|a| a.trim().to_owned())
        .unwrap_or_else(|_| format!("{}:{}", config.bind_address, config.http_port));
    let token = token
        .map(str::to_owned)
        .filter(|t| !t.trim().is_empty())
        .or_else(|| std::fs::read_to_string(data_dir.join("root.token")).ok());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (status, body) = runtime
        .block_on(async {
            let mut connection =
                crate::http_client::Connection::open(&format!("http://{addr}")).await?;
            connection
                .send(
                    hyper::Method::POST,
                    "/admin/backups",
                    None,
                    token.as_deref().map(str::trim),
                )
                .await
        })
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

/// Copies `from` to a new private file `to` and syncs it, with a progress bar labelled
/// `what` when stderr is a terminal.
/// On a terminal, a line that follows a backup being written into a backups dir (by the
/// node, or by `kvs backup` itself when it is stopped): the bytes of the newest backup
/// file so far, and the time taken. LMDB's copy tells nothing of its progress, and its
/// total is not known before it ends, so this counts what has been written.
struct BackupProgress {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackupProgress {
    fn follow(dir: &Path) -> Self {
        use std::io::IsTerminal;
        use std::sync::atomic::{AtomicBool, Ordering};
        let done = std::sync::Arc::new(AtomicBool::new(false));
        if !std::io::stderr().is_terminal() {
            return Self { done, thread: None };
        }
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} backing up: {binary_bytes} written ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
        let bar = indicatif::ProgressBar::new_spinner().with_style(style);
        let (dir, stop) = (dir.to_path_buf(), std::sync::Arc::clone(&done));
        let started = std::time::SystemTime::now();
        let thread = std::thread::spawn(move || {
            // Drawn at least once, however quick the backup.
            loop {
                bar.set_position(newest_size_since(&dir, started));
                bar.tick();
                if stop.load(Ordering::Acquire) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            bar.finish_and_clear();
        });
        Self {
            done,
            thread: Some(thread),
        }
    }

    fn finish(mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The size of the newest `.mdb` file in `dir` modified since `since` (0 if none).
fn newest_size_since(dir: &Path, since: std::time::SystemTime) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "mdb"))
        .filter_map(|entry| entry.metadata().ok())
        .filter(|meta| meta.modified().is_ok_and(|at| at >= since))
        .max_by_key(|meta| meta.modified().ok())
        .map_or(0, |meta| meta.len())
}

/// Copies the first `len` bytes of `from` (fewer if it is shorter) to a new private file
/// `to` and syncs it, each chunk also given to `seen`, with a progress bar labelled `what`
/// on a terminal.
fn copy_with_progress(
    from: &Path,
    to: &Path,
    what: &str,
    len: u64,
    seen: &mut dyn FnMut(&[u8]),
) -> std::io::Result<()> {
    use std::io::{IsTerminal, Read, Write};
    let mut input = File::open(from)?.take(len);
    let total = len;
    let bar = if std::io::stderr().is_terminal() {
        let style = indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {binary_bytes}/{binary_total_bytes} ({eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        indicatif::ProgressBar::new(total)
            .with_style(style)
            .with_message(what.to_owned())
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut output = private_files::create(to)?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        seen(&buffer[..n]);
        output.write_all(&buffer[..n])?;
        bar.inc(n as u64);
    }
    output.sync_all()?;
    bar.finish_and_clear();
    Ok(())
}

/// `kvs restore CONFIG FILE`.
pub fn run_restore(arg: &str, file: &Path) -> std::process::ExitCode {
    use std::process::ExitCode;
    let Some((_, data_dir)) = load(arg) else {
        return ExitCode::from(2);
    };
    // A path that names no file is a usage error, not a damaged backup.
    match std::fs::metadata(file) {
        Ok(found) if found.is_file() => {}
        Ok(_) => {
            eprintln!("kvs: {} is not a file", file.display());
            return ExitCode::from(2);
        }
        Err(error) => {
            eprintln!("kvs: cannot read {}: {error}", file.display());
            return ExitCode::from(2);
        }
    }
    match restore(&data_dir, file) {
        Ok(keys) => {
            crate::stdout::line(format_args!(
                "restored {keys} keys from {} into {}",
                file.display(),
                data_dir.display()
            ));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("kvs: {error}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvs_sync::Store;

    #[test]
    fn listing_reads_the_records_and_pruning_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = DurableStore::open(dir.path(), StoreOptions::default(), None).unwrap();
        let op = kvs_sync::conformance::put("k", "1");
        store.write_batch(&[op], 1).unwrap();
        let taken: Vec<BackupInfo> = (0..3).map(|_| take(&store, dir.path()).unwrap()).collect();
        assert_eq!(list(dir.path()).unwrap(), taken);
        assert!(taken.iter().all(|b| b.keys == 1 && b.bytes > 0));
        prune(dir.path(), 1).unwrap();
        assert_eq!(list(dir.path()).unwrap(), [taken[2].clone()]);
        let files = std::fs::read_dir(backups_dir(dir.path())).unwrap().count();
        assert_eq!(files, 2, "one backup and its record");
    }
}
