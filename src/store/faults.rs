//! A fault-injecting layer under the write-ahead log: every segment operation (append,
//! cut back, `fdatasync`) goes through [`Segment`], which fails the next operations a
//! [`Faults`] plan names. Production stores run with an empty plan; tests (and, later,
//! the simulator's storage faults) inject failures exactly where a disk would fail.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A failure to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// An append fails with nothing written.
    Write,
    /// An append writes the first half of its bytes, then fails (a torn write).
    TornWrite,
    /// An append fails with nothing written because the disk is full (`ENOSPC`).
    Full,
    /// Cutting a segment back after a failed append fails.
    CutBack,
    /// An `fdatasync` fails.
    Sync,
}

/// The failures still to inject, in order, per kind of operation.
#[derive(Debug, Default)]
pub struct Faults(Mutex<VecDeque<Fault>>);

impl Faults {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Fault>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the next operation that `fault` applies to fail.
    pub fn inject(&self, fault: Fault) {
        self.lock().push_back(fault);
    }

    /// Takes the first planned failure among `kinds`, if any.
    fn take(&self, kinds: &[Fault]) -> Option<Fault> {
        let mut plan = self.lock();
        let at = plan.iter().position(|fault| kinds.contains(fault))?;
        plan.remove(at)
    }
}

fn injected(what: &str) -> std::io::Error {
    std::io::Error::other(format!("injected fault: {what}"))
}

/// A log segment file and the plan of faults its operations obey.
pub(crate) struct Segment {
    file: File,
    faults: Arc<Faults>,
}

impl Segment {
    pub(crate) fn new(file: File, faults: Arc<Faults>) -> Self {
        Self { file, faults }
    }

    /// Writes `bytes` at offset `at`.
    pub(crate) fn write_at(&self, bytes: &[u8], at: u64) -> std::io::Result<()> {
        match self
            .faults
            .take(&[Fault::Write, Fault::TornWrite, Fault::Full])
        {
            Some(Fault::TornWrite) => {
                self.file.write_all_at(&bytes[..bytes.len() / 2], at)?;
                Err(injected("torn write"))
            }
            Some(Fault::Full) => Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "injected fault: no space left on device",
            )),
            Some(_) => Err(injected("write")),
            None => self.file.write_all_at(bytes, at),
        }
    }

    /// Cuts the segment back to `len` bytes.
    pub(crate) fn set_len(&self, len: u64) -> std::io::Result<()> {
        match self.faults.take(&[Fault::CutBack]) {
            Some(_) => Err(injected("cut back")),
            None => self.file.set_len(len),
        }
    }

    /// `fdatasync`.
    pub(crate) fn sync_data(&self) -> std::io::Result<()> {
        match self.faults.take(&[Fault::Sync]) {
            Some(_) => Err(injected("fdatasync")),
            None => self.file.sync_data(),
        }
    }
}
