//! Group commit: concurrent writes share one WAL write and one fsync.
//!
//! Writers hand their op to the commit thread and wait for its answer. The thread takes
//! every op that is waiting (up to [`MAX_BATCH`]), plans and writes them with one
//! [`DurableStore::stage`], makes them durable with one [`DurableStore::make_durable`],
//! and answers each writer. No timer is involved: while one fsync runs, the next group
//! gathers by itself, so its cost is shared by as many writes as arrived meanwhile.
//! (A second thread that staged the next group during the fsync was measured: on two
//! cores its extra wake-ups cost more than the overlap won.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use kvs_sync::{StoreError, WriteOp, WriteOutcome, WriteRejected};
use tokio::sync::oneshot;

use super::DurableStore;

/// The most ops one stage takes.
const MAX_BATCH: usize = 1024;

type Answer = Result<Result<WriteOutcome, WriteRejected>, StoreError>;

struct Pending {
    op: WriteOp,
    reply: oneshot::Sender<Answer>,
}

/// A staged group: its answers, to send once the log is durable through `through`.
struct StagedGroup {
    through: u64,
    answers: Vec<(oneshot::Sender<Answer>, Result<WriteOutcome, WriteRejected>)>,
}

/// Counters of the committer.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Commits (syncs of the log) done.
    pub commits: AtomicU64,
    /// Ops committed.
    pub ops: AtomicU64,
}

/// The handle writers use; dropping it stops the thread after the last group.
pub struct GroupCommitter {
    queue: mpsc::Sender<Pending>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<CommitStats>,
}

impl GroupCommitter {
    /// Starts the commit thread over `store`; `clock` gives the wall time in Unix ms.
    pub fn start(store: Arc<DurableStore>, clock: fn() -> u64) -> std::io::Result<Self> {
        let (queue, ops) = mpsc::channel::<Pending>();
        let stats = Arc::new(CommitStats::default());
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("kvs-commit".into())
            .spawn(move || {
                while let Ok(first) = ops.recv() {
                    let batch = drain(&ops, first);
                    if let Some(group) = stage_group(&store, batch, clock) {
                        answer(&store, group, &thread_stats);
                    }
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

/// `first` and whatever else is queued already, at most [`MAX_BATCH`] in all.
fn drain(receiver: &mpsc::Receiver<Pending>, first: Pending) -> Vec<Pending> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    batch
}

/// Stages `batch`, stamped at `clock`'s time; on failure answers every writer with the
/// error at once.
fn stage_group(
    store: &DurableStore,
    batch: Vec<Pending>,
    clock: fn() -> u64,
) -> Option<StagedGroup> {
    let (ops, replies): (Vec<WriteOp>, Vec<_>) = batch.into_iter().map(|p| (p.op, p.reply)).unzip();
    match store.stage(&ops, clock) {
        Ok((results, through)) => Some(StagedGroup {
            through,
            answers: replies.into_iter().zip(results).collect(),
        }),
        Err(error) => {
            tracing::error!(%error, ops = ops.len(), "a commit failed; its writes are refused");
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
            None
        }
    }
}

/// Makes `group` durable and answers its writers.
fn answer(store: &DurableStore, group: StagedGroup, stats: &CommitStats) {
    match store.make_durable(group.through) {
        Ok(()) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats
                .ops
                .fetch_add(group.answers.len() as u64, Ordering::Relaxed);
            for (reply, result) in group.answers {
                let _ = reply.send(Ok(result));
            }
        }
        Err(error) => {
            tracing::error!(%error, "syncing the log failed; its writes are refused");
            for (reply, _) in group.answers {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
