//! A full disk (issue 11, storage edges): a node whose data dir is on a small tmpfs takes
//! writes until the disk is full, then refuses them with `503 unavailable` and a message
//! that says why, keeps serving reads and every write it acknowledged, takes writes
//! again once space is freed, stops on SIGTERM without waiting for the disk, and has
//! every acknowledged write after a restart. (LMDB wrote through its memory map before:
//! the first page it could not allocate ended the process with SIGBUS.) A node keeps room
//! for LMDB to take in what its log holds, so that a burst of writes cannot fill the disk
//! with records it could not replay; and a disk filled by something else under it fails
//! the reads that need LMDB caught up instead of holding them (and the node's stop).
//!
//! Mounting the tmpfs needs root (CI has it). Without root it prints a skip line, or
//! fails when `CI` is set. The mount goes away on drop, panic or not.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::cluster::within;
use common::{Node, PLAIN};
use rand::{Rng, SeedableRng};

/// The tmpfs's size and the ballast freed later to make room.
const DISK: &str = "size=24m";
const BALLAST_BYTES: usize = 4 << 20;
/// 100 KB per value (compression off).
const VALUE_CHARS: usize = 100_000;

/// A tmpfs mounted on a temp dir, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", DISK, "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Whether this process may mount a tmpfs (root); without, it prints a skip line, or
/// fails when `CI` is set (CI runs as root: the full-disk tests must run there).
fn can_mount() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI runs as root: the full-disk test must run there"
    );
    eprintln!("skipped: mounting a tmpfs needs root");
    false
}

fn value(rng: &mut impl Rng) -> String {
    let bytes: Vec<u8> = (0..VALUE_CHARS / 2).map(|_| rng.r#gen()).collect();
    format!("\"{}\"", hex::encode(bytes))
}

#[test]
fn a_full_disk_refuses_writes_cleanly_and_loses_nothing_acknowledged() {
    if !can_mount() {
        return;
    }
    let disk = Tmpfs::mount();
    let ballast: PathBuf = disk.path().join("ballast");
    std::fs::write(&ballast, vec![7u8; BALLAST_BYTES]).expect("ballast");
    let data_dir = disk.path().join("data");
    let mut node = Node::start(&format!(
        "{PLAIN}revision_history_enabled: false\ncompression_enabled: false\ndata_dir: {}\n",
        data_dir.display()
    ));

    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut acknowledged = Vec::new();
    let refusal = loop {
        assert!(acknowledged.len() < 1_000, "the disk never filled up");
        let (key, value) = (format!("k{}", acknowledged.len()), value(&mut rng));
        let answer = node.put(&format!("/kv/{key}"), &value);
        if answer.status == 201 {
            acknowledged.push((key, value));
        } else {
            break answer;
        }
    };
    assert!(acknowledged.len() > 20, "{} writes", acknowledged.len());
    assert_eq!(refusal.status, 503, "{}", refusal.body);
    assert_eq!(refusal.error_code(), "unavailable");
    let message = refusal.json()["error"]["message"].to_string();
    assert!(message.contains("disk is full"), "{message}");

    // The node is up, serves reads, and holds every write it acknowledged.
    assert_eq!(node.get("/health").status, 200);
    for (key, value) in &acknowledged {
        let answer = node.get(&format!("/kv/{key}"));
        assert_eq!(answer.status, 200, "{key}");
        assert_eq!(answer.json()["data"].to_string(), *value, "{key}");
    }

    // Space freed: writes are taken again.
    std::fs::remove_file(&ballast).expect("remove ballast");
    let small = "\"after the ballast went\"";
    assert!(
        within(Duration::from_secs(10), || node
            .put("/kv/after", small)
            .status
            == 201),
        "a write is taken again once space is freed"
    );
    acknowledged.push(("after".into(), small.into()));

    // SIGTERM ends the node even while LMDB cannot take what the log holds.
    let child = node.child.as_ref().expect("running").id();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let stopped = within(Duration::from_secs(15), || {
        node.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    });
    assert!(stopped, "the node stops on SIGTERM with a full disk");
    node.child = None;

    // A restart has every acknowledged write (from LMDB or the log's replay).
    node.launch();
    for (key, value) in &acknowledged {
        let answer = node.get(&format!("/kv/{key}"));
        assert_eq!(answer.status, 200, "{key} after the restart");
        assert_eq!(
            answer.json()["data"].to_string(),
            *value,
            "{key} after the restart"
        );
    }
}

/// Fills the disk holding `dir` with the file `ballast`, then frees `leave` bytes of it.
fn fill_disk(ballast: &Path, leave: u64) {
    use std::io::Write as _;
    let mut file = std::fs::File::create(ballast).expect("ballast");
    let chunk = vec![7u8; 64 << 10];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.flush();
    let full = file.metadata().expect("ballast size").len();
    file.set_len(full.saturating_sub(leave))
        .expect("shrink ballast");
}

#[test]
fn compacting_on_a_full_disk_fails_and_leaves_the_data_file_as_it_was() {
    if !can_mount() {
        return;
    }
    let disk = Tmpfs::mount();
    let data_dir = disk.path().join("data");
    let mut node = Node::start(&format!(
        "{PLAIN}revision_history_enabled: false\ncompression_enabled: false\ndata_dir: {}\n",
        data_dir.display()
    ));
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let written: Vec<(String, String)> = (0..40)
        .map(|i| (format!("k{i}"), value(&mut rng)))
        .collect();
    for (key, value) in &written {
        assert_eq!(node.put(&format!("/kv/{key}"), value).status, 201);
    }
    assert!(node.terminate().success());
    let data_file = data_dir.join("data.mdb");
    let inode = || std::fs::metadata(&data_file).expect("data file").ino();
    let before = inode();

    // Room for the store's own opening, not for the 4 MB copy.
    let ballast = disk.path().join("ballast");
    fill_disk(&ballast, 256 << 10);
    let (config, dir) = (node.config.clone(), node.dir.path().to_path_buf());
    let compact = || common::run_kvs(&["compact", config.to_str().unwrap()], &dir, &[]);
    let refused = compact();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(said.contains("packed copy"), "{said}");
    assert!(said.contains("disk is too full"), "{said}");
    assert_eq!(inode(), before, "the data file was not replaced");
    assert!(
        !data_dir.join("compacting").exists(),
        "the partial copy is gone"
    );
    let holds_every_write = |node: &Node| {
        for (key, value) in &written {
            let answer = node.get(&format!("/kv/{key}"));
            assert_eq!(answer.json()["data"].to_string(), *value, "{key}");
        }
    };
    node.launch();
    holds_every_write(&node);
    assert!(node.terminate().success());

    std::fs::remove_file(&ballast).expect("remove ballast");
    let done = compact();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_ne!(inode(), before, "the packed copy replaced the data file");
    node.launch();
    holds_every_write(&node);
}

/// The disk filled by another file while LMDB has yet to take the log's last writes:
/// the store answers what needs LMDB caught up (a listing, the purge) with an error at
/// once, and its figures from what LMDB holds, where it waited for as long as the disk
/// was full (a node then never stopped on SIGTERM: its purge task waited); it closes at
/// once, keeping the log; and once space is freed it opens with every write it
/// acknowledged.
#[test]
fn a_disk_filled_under_the_applier_fails_reads_that_need_it_and_keeps_every_write() {
    use kvs::store::DurableStore;
    use kvs_sync::conformance::put;
    use kvs_sync::{Store, StoreOptions};
    if !can_mount() {
        return;
    }
    let disk = Tmpfs::mount();
    let data_dir = disk.path().join("data");
    let options = StoreOptions {
        max_revisions: 0,
        compression_min_bytes: None,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let written: Vec<(String, String)> = (0..30)
        .map(|i| (format!("k{i}"), value(&mut rng)))
        .collect();
    let store = Arc::new(DurableStore::open(&data_dir, options, None).expect("open"));
    for (key, data) in &written {
        let outcome = store.write_batch(&[put(key, data)], 1_000).expect("write");
        assert!(outcome[0].is_ok(), "{key}");
    }
    // Within the applier's delay: LMDB has none of it yet.
    let ballast = disk.path().join("ballast");
    fill_disk(&ballast, 0);

    // In a thread: before, the listing waited for as long as the disk was full.
    let (answer, listed) = std::sync::mpsc::channel();
    let lister = Arc::clone(&store);
    std::thread::spawn(move || answer.send(lister.list("", None, 100, 1_000).is_err()));
    let listed = listed.recv_timeout(Duration::from_secs(10));
    assert_eq!(
        listed,
        Ok(true),
        "a listing fails at once while LMDB cannot take the log"
    );
    assert!(store.purge(1_000, 60_000, None).is_err());
    assert!(store.stats().is_ok(), "the figures (/metrics) still answer");
    assert_eq!(
        store.get("k0").expect("get").and_then(|v| v.data),
        Some(written[0].1.clone()),
        "a key is still read from what the log holds"
    );
    assert!(store.close().is_err(), "the close says the log is kept");
    drop(store);

    std::fs::remove_file(&ballast).expect("remove ballast");
    let store = DurableStore::open(&data_dir, options, None).expect("reopen");
    for (key, data) in &written {
        let held = store.get(key).expect("get").and_then(|v| v.data);
        assert_eq!(held.as_ref(), Some(data), "{key} after the reopen");
    }
    assert_eq!(
        store.list("", None, 100, 1_000).expect("list").items.len(),
        30
    );
    store.close().expect("close");
}

/// Found by a black-box audit: a backup on a full disk answered `500` ("internal
/// error") and left an empty `.mdb` file per attempt, which no listing showed and no
/// retention removed. It now answers `503` saying the disk is full, and leaves nothing.
#[test]
fn a_backup_on_a_full_disk_is_refused_as_such_and_leaves_no_file() {
    if !can_mount() {
        return;
    }
    let disk = Tmpfs::mount();
    let data_dir = disk.path().join("data");
    let node = Node::start(&format!(
        "{PLAIN}revision_history_enabled: false\ncompression_enabled: false\ndata_dir: {}\n",
        data_dir.display()
    ));
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    for i in 0..40 {
        assert_eq!(node.put(&format!("/kv/k{i}"), &value(&mut rng)).status, 201);
    }
    let ballast = disk.path().join("ballast");
    fill_disk(&ballast, 256 << 10);
    let backups = data_dir.join("backups");
    for _ in 0..3 {
        let refused = node.request("POST", "/admin/backups", None, &[]);
        assert_eq!(refused.status, 503, "{}", refused.body);
        assert!(refused.body.contains("disk is full"), "{}", refused.body);
    }
    let files: Vec<_> = std::fs::read_dir(&backups)
        .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(files.is_empty(), "left behind: {files:?}");
    std::fs::remove_file(&ballast).expect("remove ballast");
    // The applier, refused by the full disk too, retries every 100 ms.
    let taken = within(Duration::from_secs(10), || {
        node.request("POST", "/admin/backups", None, &[]).status == 201
    });
    assert!(taken, "no backup once space was freed");
}
