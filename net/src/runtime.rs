//! The executor seam: how protocol drivers spawn tasks, sleep and run blocking work, so
//! that the same driver code runs on tokio in the node ([`TokioRuntime`], feature
//! `tokio`) and on the simulator's deterministic executor on virtual time. Modelled on
//! quinn's `Runtime` trait: drivers hold an `Arc<dyn Runtime>` and never call
//! `tokio::spawn` or `tokio::time` themselves.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// A spawned task's future.
pub type BoxTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A timer future.
pub type BoxSleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Blocking work handed to [`Runtime::spawn_blocking`].
pub type BlockingWork = Box<dyn FnOnce() + Send + 'static>;

/// An executor for driver tasks.
pub trait Runtime: Send + Sync + 'static {
    /// Starts `task`; the handle stops it or waits for it.
    fn spawn(&self, task: BoxTask) -> TaskHandle;

    /// Completes after `duration` of this runtime's time.
    fn sleep(&self, duration: Duration) -> BoxSleep;

    /// Runs `work` where it may block without stalling other tasks (the simulator runs it
    /// at once, in place: its work is in memory and must stay deterministic).
    fn spawn_blocking(&self, work: BlockingWork);
}

/// What a runtime's task handle does.
pub trait TaskControl: Send + Sync + 'static {
    /// Stops the task at its next await point (at once where it is not running).
    fn abort(&self);

    /// Ready once the task finished or was aborted.
    fn poll_finished(&mut self, cx: &mut Context<'_>) -> Poll<()>;

    /// Whether the task has finished (or was aborted and dropped).
    fn is_finished(&self) -> bool;
}

/// A spawned task: await it to wait until it is finished, or [`TaskHandle::abort`] it.
/// Dropping the handle leaves the task running.
pub struct TaskHandle(Box<dyn TaskControl>);

impl TaskHandle {
    /// Wraps a runtime's own handle.
    pub fn new(control: impl TaskControl) -> Self {
        Self(Box::new(control))
    }

    /// Stops the task.
    pub fn abort(&self) {
        self.0.abort();
    }

    /// Whether the task has finished.
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

/// The tasks a driver started on the side (one per connection, per stream...), to stop
/// at shutdown: finished ones are let go as new ones come, [`TaskSet::shutdown`] aborts
/// the rest and waits until every one has ended.
#[derive(Debug, Default)]
pub struct TaskSet(std::sync::Mutex<Vec<TaskHandle>>);

impl TaskSet {
    fn tasks(&self) -> std::sync::MutexGuard<'_, Vec<TaskHandle>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `task` until it ends or the set shuts down.
    pub fn push(&self, task: TaskHandle) {
        let mut tasks = self.tasks();
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Tasks not finished yet.
    pub fn running(&self) -> usize {
        self.tasks().iter().filter(|t| !t.is_finished()).count()
    }

    /// Aborts every task and waits for each to end.
    pub async fn shutdown(&self) {
        let tasks = std::mem::take(&mut *self.tasks());
        tasks.iter().for_each(TaskHandle::abort);
        for task in tasks {
            task.await;
        }
    }
}

impl Future for TaskHandle {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll_finished(cx)
    }
}

impl std::fmt::Debug for TaskHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TaskHandle")
    }
}

/// `future`'s output, or `None` if `limit` passed first on `runtime`'s time.
pub async fn timeout<F: Future>(
    runtime: &dyn Runtime,
    limit: Duration,
    future: F,
) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut sleep = runtime.sleep(limit);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        sleep.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// Runs `work` through [`Runtime::spawn_blocking`] and waits for its result (`None` if it
/// panicked).
pub async fn run_blocking<R: Send + 'static>(
    runtime: &dyn Runtime,
    work: impl FnOnce() -> R + Send + 'static,
) -> Option<R> {
    let (done, result) = tokio::sync::oneshot::channel();
    runtime.spawn_blocking(Box::new(move || {
        let _ = done.send(work());
    }));
    result.await.ok()
}

pub use self::tokio_runtime::TokioRuntime;

mod tokio_runtime {
    use super::{BlockingWork, BoxSleep, BoxTask, Runtime, TaskControl, TaskHandle};
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    /// The tokio runtime the caller runs in (spawning needs a runtime context).
    #[derive(Debug, Clone, Copy, Default)]
    pub struct TokioRuntime;

    struct Handle(tokio::task::JoinHandle<()>);

    impl TaskControl for Handle {
        fn abort(&self) {
            self.0.abort();
        }

        fn poll_finished(&mut self, cx: &mut Context<'_>) -> Poll<()> {
            Pin::new(&mut self.0).poll(cx).map(|_| ())
        }

        fn is_finished(&self) -> bool {
            self.0.is_finished()
        }
    }

    impl Runtime for TokioRuntime {
        fn spawn(&self, task: BoxTask) -> TaskHandle {
            TaskHandle::new(Handle(tokio::spawn(task)))
        }

        fn sleep(&self, duration: Duration) -> BoxSleep {
            Box::pin(tokio::time::sleep(duration))
        }

        fn spawn_blocking(&self, work: BlockingWork) {
            drop(tokio::task::spawn_blocking(work));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test(start_paused = true)]
    async fn timeout_gives_the_output_or_none() {
        let runtime = TokioRuntime;
        let quick = timeout(&runtime, Duration::from_secs(1), async { 7 }).await;
        assert_eq!(quick, Some(7));
        let slow = timeout(
            &runtime,
            Duration::from_secs(1),
            std::future::pending::<()>(),
        )
        .await;
        assert_eq!(slow, None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_aborted_task_finishes_without_running_on() {
        let runtime = TokioRuntime;
        let ran_on = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran_on);
        let sleep = runtime.sleep(Duration::from_secs(5));
        let handle = runtime.spawn(Box::pin(async move {
            sleep.await;
            flag.store(true, Ordering::SeqCst);
        }));
        handle.abort();
        handle.await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!ran_on.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_set_lets_finished_tasks_go_and_stops_the_rest() {
        let runtime = TokioRuntime;
        let set = TaskSet::default();
        set.push(runtime.spawn(Box::pin(async {})));
        for _ in 0..3 {
            set.push(runtime.spawn(Box::pin(std::future::pending::<()>())));
        }
        tokio::task::yield_now().await;
        assert_eq!(set.running(), 3);
        set.shutdown().await;
        assert_eq!(set.running(), 0);
    }

    #[tokio::test]
    async fn blocking_work_returns_its_result() {
        assert_eq!(run_blocking(&TokioRuntime, || 40 + 2).await, Some(42));
    }
}
