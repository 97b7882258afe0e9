//! The write-ahead log: the durability point of every accepted write.
//!
//! Batches of new versions are written to the current segment file as they are planned,
//! and made durable together by one `fdatasync` of the segment ([`Wal::sync_handle`],
//! called without the log's lock, so that the next batches are written meanwhile); that
//! is all a write waits for. The versions reach LMDB afterwards, in
//! the background, through LMDB's own durable commits; segments whose every record is in
//! LMDB are deleted. On start, whatever segments remain are replayed into LMDB.
//!
//! Segments are written in place, not appended to: once the current one is half full, a
//! thread makes the next one ahead of time, its [`SEGMENT_BYTES`] written as zeros and
//! synced (a spare, `wal-*.spare`, never replayed). Writing records over those zeros
//! leaves the file's size as it is, so each `fdatasync` writes the records alone; a
//! segment that grows has ext4 write its inode too at each one, a second device write
//! per commit. A segment is cut to its records when it is closed, and replay reads the
//! zeros after the last record of the newest segment as its end.
//!
//! Record framing: `len: u32 LE | crc32(payload): u32 LE | payload`, payload =
//! `seq: u64 BE | kind: u8 | body`; a version's body is `key_len: u16 BE | key | record`
//! (the LMDB record encoding), an audit entry's is its JSON. A torn or corrupt tail ends
//! the last segment's replay (nothing after it was ever acknowledged); damage followed by
//! whole records in the last segment (unless it is the zeros a crash leaves), damage in a
//! closed segment, or a read error stops the store from opening instead (see [`recover`]).
//! How a torn tail is told from damage is in `wal_damage.rs`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use kvs_sync::StoreError;

use self::damage::{damage_before_a_record, rest_is_zeros, whole_but_damaged};
use super::faults::{Faults, Segment};
use super::lmdb::{Logged, Staged};
use super::record;

/// A segment is closed and a new one started past this size.
const SEGMENT_BYTES: u64 = 32 << 20;
/// No record is larger than this (keys ≤ 512 B, values bounded by the request limit,
/// itself capped below this by the config's checks): a larger one is refused at write
/// time, never acknowledged and then dropped on replay.
pub(crate) const MAX_RECORD: u32 = 256 << 20;

fn io_error(context: &str, error: std::io::Error) -> StoreError {
    let what = format!("write-ahead log: {context}: {error}");
    match error.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            StoreError::Full(what)
        }
        _ => StoreError::Backend(what),
    }
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("wal-{first_seq:020}.log"))
}

/// Where the spare made while the segment starting at `first_seq` is written goes (a
/// name of its own per segment, so that no two threads ever write one file).
fn spare_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("wal-{first_seq:020}.spare"))
}

/// The bytes free to this process on the filesystem that holds `dir`.
pub(crate) fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let stats = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok(stats
        .blocks_available()
        .saturating_mul(stats.fragment_size()))
}

/// Makes a spare segment at `path`: `bytes` zeros, synced. Not on a disk with less than
/// four times that free (the records need the room more), and one that cannot be made is
/// removed, so that it takes no space the log needs.
fn make_spare(path: &Path, bytes: u64) -> std::io::Result<File> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if free_bytes(dir)? < bytes.saturating_mul(4) {
        return Err(std::io::Error::other(
            "too little free space for a spare segment",
        ));
    }
    let made = zero_file(path, bytes);
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

fn zero_file(path: &Path, bytes: u64) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let part = zeros.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        (&file).write_all(&zeros[..part])?;
        left -= part as u64;
    }
    file.sync_all()?;
    Ok(file)
}

/// Removes the spares in `dir` (one a crash or a stop left behind).
fn remove_spares(dir: &Path) -> Result<(), StoreError> {
    for (_, path) in log_files(dir, ".spare")? {
        std::fs::remove_file(&path).map_err(|e| io_error("removing a spare segment", e))?;
    }
    Ok(())
}

/// Segments in `dir`, oldest first, with their first sequence numbers.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    log_files(dir, ".log")
}

/// The files `wal-<seq><suffix>` in `dir`, by seq.
fn log_files(dir: &Path, suffix: &str) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error("listing", e))? {
        let path = entry.map_err(|e| io_error("listing", e))?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("wal-")?.strip_suffix(suffix)?.parse().ok());
        if let Some(seq) = seq {
            found.push((seq, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Why a write to the log failed.
#[derive(Debug)]
pub(super) enum WalError {
    /// Nothing was written; the log can go on.
    Failed(StoreError),
    /// The log's state on disk is unknown: nothing more may be written to it.
    Broken(StoreError),
}

impl WalError {
    pub(super) fn into_store_error(self) -> StoreError {
        match self {
            WalError::Failed(error) | WalError::Broken(error) => error,
        }
    }
}

/// Payload kinds.
const VERSION: u8 = 0;
const AUDIT: u8 = 1;

/// One recovered record.
pub(super) struct Recovered {
    pub(super) seq: u64,
    pub(super) item: Logged,
}

/// Reads every intact record of every segment in `dir`, in order. A torn or corrupt
/// record ends the last segment's replay (a crash during an append leaves one; nothing
/// after it was acknowledged), unless a whole record follows it there and the bad bytes
/// are not the zeros of space a crash left unwritten: that is damage to records already
/// written, which may hold acknowledged writes. Damage, in the last segment or in a
/// closed one (closed segments were synced whole), and a read error are errors, so that
/// no acknowledged write is skipped.
pub(super) fn recover(dir: &Path) -> Result<Vec<Recovered>, StoreError> {
    let mut out = Vec::new();
    let found = segments(dir)?;
    let last = found.len().saturating_sub(1);
    for (index, (first_seq, path)) in found.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(|e| io_error("reading a segment", e))?;
        let mut rest: &[u8] = &bytes;
        let mut last_seq = first_seq.saturating_sub(1);
        let mut records = 0;
        loop {
            let at = bytes.len() - rest.len();
            match read_record(&mut rest) {
                Ok(Some(record)) => {
                    last_seq = record.seq;
                    records += 1;
                    out.push(record);
                }
                Ok(None) => break,
                // The rest of a segment made ahead of time, never written.
                Err(ReadError::Torn) if index == last && rest_is_zeros(&bytes[at..]) => break,
                Err(ReadError::Torn) if index == last => {
                    if let Some(later) = damage_before_a_record(&bytes, at, last_seq) {
                        return Err(StoreError::Backend(format!(
                            "write-ahead log segment {} is damaged at byte {at} (after {records} \
                             records), and a whole record (seq {later}) follows the damage: not \
                             a write cut short by a crash, so the store is not opened, to skip \
                             no acknowledged write. To start without its records from there on, \
                             cut it there (`truncate -s {at} {}`), or restore a backup",
                            path.display(),
                            path.display()
                        )));
                    }
                    if whole_but_damaged(&bytes, at) {
                        return Err(StoreError::Backend(format!(
                            "write-ahead log segment {} is damaged at byte {at} (after {records} \
                             records): its last record is whole, with no part left unwritten, \
                             but its checksum does not match; a crash does not leave that, so \
                             the store is not opened, to skip no acknowledged write. To start \
                             without it, cut it there (`truncate -s {at} {}`), or restore a backup",
                            path.display(),
                            path.display()
                        )));
                    }
                    tracing::warn!(path = %path.display(), "the write-ahead log ends in a torn record; it is dropped");
                    break;
                }
                Err(ReadError::Torn) => {
                    return Err(StoreError::Corrupt {
                        key: String::new(),
                        reason: format!(
                            "write-ahead log segment {} is damaged after {} records (a closed segment is never torn)",
                            path.display(),
                            records
                        ),
                    });
                }
                Err(ReadError::Io(error)) => return Err(io_error("reading a segment", error)),
            }
        }
    }
    Ok(out)
}

/// A record's length and checksum from its first 8 bytes; `None` for a length no record
/// has (a payload holds at least a seq, a kind and a key's length).
fn record_header(head: &[u8; 8]) -> Option<(usize, u32)> {
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    (11..=MAX_RECORD)
        .contains(&len)
        .then_some((len as usize, crc))
}

/// Why a record could not be read.
#[derive(Debug)]
enum ReadError {
    /// A record cut short, or one whose checksum or contents are wrong.
    Torn,
    /// The file could not be read.
    Io(std::io::Error),
}

/// Fills `buf` from `reader`; returns how many bytes it got before the end of the file.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> Result<usize, ReadError> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(ReadError::Io(error)),
        }
    }
    Ok(got)
}

/// The next record; `None` at the end of the file, exactly after a record.
fn read_record(reader: &mut impl Read) -> Result<Option<Recovered>, ReadError> {
    let mut head = [0u8; 8];
    match fill(reader, &mut head)? {
        0 => return Ok(None),
        8 => {}
        _ => return Err(ReadError::Torn),
    }
    let Some((len, crc)) = record_header(&head) else {
        return Err(ReadError::Torn);
    };
    let mut payload = vec![0u8; len];
    if fill(reader, &mut payload)? < payload.len() || crc32fast::hash(&payload) != crc {
        return Err(ReadError::Torn);
    }
    decode_payload(&payload).ok_or(ReadError::Torn).map(Some)
}

/// A record's payload (checksum verified) as the item it logged.
fn decode_payload(payload: &[u8]) -> Option<Recovered> {
    let seq = u64::from_be_bytes(payload[..8].try_into().ok()?);
    let item = match payload[8] {
        VERSION => {
            let key_len = usize::from(u16::from_be_bytes(payload[9..11].try_into().ok()?));
            let key = std::str::from_utf8(payload.get(11..11 + key_len)?)
                .ok()?
                .to_owned();
            let record = payload.get(11 + key_len..)?.to_vec();
            let version = record::decode(&key, &record).ok()?;
            Logged::Version(Staged {
                key,
                version: version.into(),
                record,
            })
        }
        AUDIT => Logged::Audit(serde_json::from_slice(&payload[9..]).ok()?),
        _ => return None,
    };
    Some(Recovered { seq, item })
}

/// The log being written.
pub(super) struct Wal {
    dir: PathBuf,
    /// The current segment, shared with whoever syncs it.
    file: Arc<Segment>,
    faults: Arc<Faults>,
    /// Bytes of records in the current segment.
    size: u64,
    /// Whether the current segment was made ahead of time (zeros after its records).
    made_ahead: bool,
    /// The size past which a segment is closed ([`SEGMENT_BYTES`]; tests make it smaller).
    segment_bytes: u64,
    /// The next segment, being made or made.
    spare: Option<JoinHandle<std::io::Result<(File, PathBuf)>>>,
    /// Closed and current segments: first sequence number and path, oldest first.
    segments: Vec<(u64, PathBuf)>,
    buffer: Vec<u8>,
}

impl Wal {
    /// Removes every segment in `dir` (after a replay made them redundant) and starts a
    /// new one at `next_seq`.
    #[cfg(test)]
    pub(super) fn start(dir: &Path, next_seq: u64) -> Result<Self, StoreError> {
        Self::start_with(dir, next_seq, Arc::default())
    }

    /// [`Self::start`], its segment operations failing as `faults` plans.
    pub(super) fn start_with(
        dir: &Path,
        next_seq: u64,
        faults: Arc<Faults>,
    ) -> Result<Self, StoreError> {
        for (_, path) in segments(dir)? {
            std::fs::remove_file(&path).map_err(|e| io_error("removing a replayed segment", e))?;
        }
        remove_spares(dir)?;
        let (file, path) = Self::create(dir, next_seq)?;
        Ok(Self {
            dir: dir.to_owned(),
            file: Arc::new(Segment::new(file, Arc::clone(&faults))),
            faults,
            size: 0,
            made_ahead: false,
            segment_bytes: SEGMENT_BYTES,
            spare: None,
            segments: vec![(next_seq, path)],
            buffer: Vec::with_capacity(64 << 10),
        })
    }

    fn create(dir: &Path, first_seq: u64) -> Result<(File, PathBuf), StoreError> {
        let path = segment_path(dir, first_seq);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error("creating a segment", e))?;
        sync_dir(dir)?;
        Ok((file, path))
    }

    /// The segment to start at `first_seq`: the spare if it is made (renamed, so that its
    /// name says where it starts), else a new, empty file.
    fn next_segment(&mut self, first_seq: u64) -> Result<(File, PathBuf, bool), StoreError> {
        if let Some(made) = self.spare.take_if(|spare| spare.is_finished()) {
            // A spare that could not be made is left alone: the segment grows instead.
            if let Ok(Ok((file, spare))) = made.join() {
                let path = segment_path(&self.dir, first_seq);
                std::fs::rename(&spare, &path).map_err(|e| io_error("taking the spare", e))?;
                sync_dir(&self.dir)?;
                return Ok((file, path, true));
            }
        }
        let (file, path) = Self::create(&self.dir, first_seq)?;
        Ok((file, path, false))
    }

    /// Starts making the next segment once the current one is half full.
    fn make_spare_ahead(&mut self) {
        if self.spare.is_some() || self.size < self.segment_bytes / 2 {
            return;
        }
        let first_seq = self.segments.last().map_or(0, |&(seq, _)| seq);
        let path = spare_path(&self.dir, first_seq);
        let bytes = self.segment_bytes;
        let made = std::thread::Builder::new()
            .name("kvs-wal-spare".into())
            .spawn(move || make_spare(&path, bytes).map(|file| (file, path)));
        // Without a thread, the next segment is made when it is needed.
        self.spare = made.ok();
    }

    /// Writes the records `(seq, item)` at the end of the log, not yet durably (see
    /// [`Self::sync_handle`]). When the write fails, the segment is cut back to where it
    /// was, so that the log holds none of them; a segment that cannot be cut back is an
    /// error of [`WalError::Broken`], after which nothing more may be written.
    pub(super) fn write(&mut self, records: &[(u64, &Logged)]) -> Result<(), WalError> {
        let Some(&(first_seq, _)) = records.first() else {
            return Ok(());
        };
        if self.size >= self.segment_bytes {
            // The closed segment is cut to its records and made durable now: later syncs
            // cover the new one only.
            if self.made_ahead {
                self.file
                    .set_len(self.size)
                    .map_err(|e| WalError::Broken(io_error("cutting a closed segment", e)))?;
            }
            self.file
                .sync_data()
                .map_err(|e| WalError::Broken(io_error("syncing", e)))?;
            let (file, path, made_ahead) =
                self.next_segment(first_seq).map_err(WalError::Failed)?;
            self.file = Arc::new(Segment::new(file, Arc::clone(&self.faults)));
            self.size = 0;
            self.made_ahead = made_ahead;
            self.segments.push((first_seq, path));
        }
        self.buffer.clear();
        for &(seq, item) in records {
            let start = self.buffer.len();
            self.buffer.extend_from_slice(&[0; 8]);
            self.buffer.extend_from_slice(&seq.to_be_bytes());
            encode_item(item, &mut self.buffer).map_err(WalError::Failed)?;
            let payload = &self.buffer[start + 8..];
            let len = u32::try_from(payload.len())
                .ok()
                .filter(|&len| len <= MAX_RECORD)
                .ok_or_else(|| {
                    WalError::Failed(StoreError::Backend(format!(
                        "a record of {} bytes is above the log's limit of {MAX_RECORD}",
                        payload.len()
                    )))
                })?;
            let crc = crc32fast::hash(payload);
            self.buffer[start..start + 4].copy_from_slice(&len.to_le_bytes());
            self.buffer[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        }
        if let Err(error) = self.file.write_at(&self.buffer, self.size) {
            let full = matches!(
                error.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            );
            let error = io_error("appending", error);
            return match self.file.set_len(self.size) {
                // A full disk wrote nothing that stays: writes go on once there is room.
                Ok(()) if full => Err(WalError::Failed(error)),
                // Any other failure (an EIO, say) leaves the file in a state nothing
                // vouches for: no write is taken until a restart replays what the log
                // really holds.
                Ok(()) => Err(WalError::Broken(error)),
                Err(cut) => Err(WalError::Broken(StoreError::Backend(format!(
                    "{error}; cutting the segment back failed too: {cut}"
                )))),
            };
        }
        self.size += self.buffer.len() as u64;
        self.make_spare_ahead();
        Ok(())
    }

    /// The segment to `fdatasync` to make every record written so far durable (closed
    /// segments were synced when they closed).
    pub(super) fn sync_handle(&self) -> Arc<Segment> {
        Arc::clone(&self.file)
    }

    /// Writes the records and makes them durable.
    #[cfg(test)]
    pub(super) fn append(&mut self, records: &[(u64, &Logged)]) -> Result<(), StoreError> {
        self.write(records).map_err(WalError::into_store_error)?;
        self.file.sync_data().map_err(|e| io_error("syncing", e))
    }

    /// Deletes every segment (the store holds all their records durably) and starts a
    /// fresh one, so that the next start has nothing to replay.
    pub(super) fn discard_all(&mut self, next_seq: u64) -> Result<(), StoreError> {
        *self = Self::start_with(&self.dir, next_seq, Arc::clone(&self.faults))?;
        Ok(())
    }

    /// Forgets closed segments whose records all have `seq <= applied` and returns
    /// them, for [`remove_segments`] (outside the log's lock: unlinking a large file can
    /// take a while).
    pub(super) fn release_through(&mut self, applied: u64) -> Vec<PathBuf> {
        let mut released = Vec::new();
        while self.segments.len() > 1 && self.segments[1].0 <= applied.saturating_add(1) {
            released.push(self.segments.remove(0).1);
        }
        released
    }
}

/// Makes the names in `dir` durable (a new segment's must be, before its records).
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("syncing the data dir", e))
}

/// Deletes released segments.
pub(super) fn remove_segments(paths: Vec<PathBuf>) {
    for path in paths {
        if let Err(error) = std::fs::remove_file(&path) {
            tracing::warn!(%error, path = %path.display(), "could not remove a WAL segment");
        }
    }
}

fn encode_item(item: &Logged, payload: &mut Vec<u8>) -> Result<(), StoreError> {
    match item {
        Logged::Version(staged) => {
            let key_len = u16::try_from(staged.key.len())
                .map_err(|_| StoreError::Backend(format!("key of {} bytes", staged.key.len())))?;
            payload.push(VERSION);
            payload.extend_from_slice(&key_len.to_be_bytes());
            payload.extend_from_slice(staged.key.as_bytes());
            payload.extend_from_slice(&staged.record);
        }
        Logged::Audit(entry) => {
            payload.push(AUDIT);
            serde_json::to_writer(&mut *payload, entry)
                .map_err(|e| StoreError::Backend(format!("encoding an audit entry: {e}")))?;
        }
    }
    Ok(())
}

#[path = "wal_damage.rs"]
mod damage;

#[cfg(test)]
#[path = "wal_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "wal_fuzz.rs"]
mod fuzz;
