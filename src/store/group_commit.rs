//! Group commit: concurrent writes share one store transaction and one fsync.
//!
//! Writers hand their op to a dedicated thread and wait for its answer. The thread takes
//! every op that is waiting (up to [`MAX_BATCH`]), applies them in one
//! [`Store::write_batch`], and answers each. Under load the batch grows by itself, so the
//! cost of an fsync is shared by as many writes as arrived while the last one ran.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvs_sync::{Store, StoreError, WriteOp, WriteOutcome, WriteRejected};
use tokio::sync::oneshot;

/// The most ops one commit takes.
const MAX_BATCH: usize = 1024;
/// A batch closes when no write arrives for this long...
const GATHER_GAP: Duration = Duration::from_micros(100);
/// ... or when it has gathered for this long (a fraction of an fsync here, ~3 ms).
const GATHER_MAX: Duration = Duration::from_micros(500);

type Answer = Result<Result<WriteOutcome, WriteRejected>, StoreError>;

struct Pending {
    op: WriteOp,
    reply: oneshot::Sender<Answer>,
}

/// Counters of the committer.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Commits (transactions, fsyncs) done.
    pub commits: AtomicU64,
    /// Ops committed.
    pub ops: AtomicU64,
}

/// The handle writers use; dropping every handle stops the thread after the last batch.
pub struct GroupCommitter {
    queue: mpsc::Sender<Pending>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<CommitStats>,
}

impl GroupCommitter {
    /// Starts the commit thread over `store`; `clock` gives the wall time in Unix ms.
    pub fn start<S: Store + ?Sized>(store: Arc<S>, clock: fn() -> u64) -> std::io::Result<Self> {
        let (queue, receiver) = mpsc::channel::<Pending>();
        let stats = Arc::new(CommitStats::default());
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("kvs-commit".into())
            .spawn(move || {
                while let Ok(first) = receiver.recv() {
                    let batch = gather(&receiver, first);
                    commit(store.as_ref(), batch, clock(), &thread_stats);
                }
            })?;
        Ok(Self {
            queue,
            thread: Some(thread),
            stats,
        })
    }

    /// Applies `op` durably and returns its outcome.
    pub async fn write(&self, op: WriteOp) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { op, reply })
            .map_err(|_| StoreError::Backend("the commit thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the commit thread dropped a write".into()))?
    }

    /// The committer's counters.
    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }

    /// Stops accepting writes and waits until every queued one is committed.
    pub fn shutdown(mut self) {
        let (queue, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.queue, queue));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Collects the writes that arrive with `first`: everything queued, then whatever
/// follows within [`GATHER_GAP`] of the previous one, for at most [`GATHER_MAX`]. Writers
/// answered by the last commit come back within that gap, so they join this commit rather
/// than waiting for the next fsync.
fn gather(receiver: &mpsc::Receiver<Pending>, first: Pending) -> Vec<Pending> {
    let started = Instant::now();
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        let waited = started.elapsed();
        let wait = GATHER_GAP.min(GATHER_MAX.saturating_sub(waited));
        match receiver.recv_timeout(wait) {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    batch
}

fn commit<S: Store + ?Sized>(store: &S, batch: Vec<Pending>, now_ms: u64, stats: &CommitStats) {
    let (ops, replies): (Vec<WriteOp>, Vec<_>) = batch.into_iter().map(|p| (p.op, p.reply)).unzip();
    match store.write_batch(&ops, now_ms) {
        Ok(results) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats.ops.fetch_add(ops.len() as u64, Ordering::Relaxed);
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
        }
        Err(error) => {
            tracing::error!(%error, ops = ops.len(), "a commit failed; its writes are refused");
            for reply in replies {
                let _ = reply.send(Err(StoreError::Backend(error.to_string())));
            }
        }
    }
}
