//! A deterministic single-threaded executor on virtual time. Ready tasks are polled in
//! the order they were woken; when none is ready, virtual time jumps to the next event
//! of the shared [`Core`] (a timer or a network delivery). No threads, no system clock.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use super::core::{Core, lock};

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Wakes a task by queueing its id.
struct TaskWaker {
    id: usize,
    ready: Arc<Mutex<VecDeque<usize>>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        lock(&self.ready).push_back(self.id);
    }
}

/// The executor's shared parts: cloned into every handle so tasks can spawn tasks.
#[derive(Clone, Default)]
pub(crate) struct Spawner {
    ready: Arc<Mutex<VecDeque<usize>>>,
    spawned: Arc<Mutex<Vec<Task>>>,
}

impl Spawner {
    /// Queues a new task; it is first polled at the next scheduling round.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        lock(&self.spawned).push(Box::pin(task));
    }
}

/// The executor: the tasks and the loop that runs them.
#[derive(Default)]
pub(crate) struct Executor {
    spawner: Spawner,
    tasks: Vec<Option<Task>>,
}

impl Executor {
    /// A handle to spawn tasks.
    pub(crate) fn spawner(&self) -> Spawner {
        self.spawner.clone()
    }

    /// Moves newly spawned tasks in and marks them ready.
    fn adopt(&mut self) {
        let new: Vec<Task> = std::mem::take(&mut *lock(&self.spawner.spawned));
        for task in new {
            let id = self.tasks.len();
            self.tasks.push(Some(task));
            lock(&self.spawner.ready).push_back(id);
        }
    }

    /// Polls ready tasks until none is ready.
    fn poll_ready(&mut self) {
        loop {
            self.adopt();
            let Some(id) = lock(&self.spawner.ready).pop_front() else {
                return;
            };
            let Some(Some(task)) = self.tasks.get_mut(id) else {
                continue;
            };
            let waker = Waker::from(Arc::new(TaskWaker {
                id,
                ready: Arc::clone(&self.spawner.ready),
            }));
            if task
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_ready()
            {
                self.tasks[id] = None;
            }
        }
    }

    /// Runs tasks and events until virtual time `end` (or until nothing is left to do);
    /// returns the virtual time reached.
    pub(crate) fn run_until(&mut self, core: &Arc<Mutex<Core>>, end: Duration) -> Duration {
        loop {
            self.poll_ready();
            let mut c = lock(core);
            if !c.step(end) {
                c.now = c.now.max(end);
                return c.now;
            }
        }
    }

    /// Tasks not finished yet.
    pub(crate) fn live_tasks(&self) -> usize {
        self.tasks.iter().filter(|t| t.is_some()).count()
    }
}

/// A future that completes at a virtual time.
pub struct Sleep {
    core: Arc<Mutex<Core>>,
    until: Duration,
    registered: bool,
}

impl Sleep {
    pub(crate) fn new(core: Arc<Mutex<Core>>, until: Duration) -> Self {
        Self {
            core,
            until,
            registered: false,
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut core = lock(&self.core);
        if core.now >= self.until {
            return Poll::Ready(());
        }
        if !self.registered {
            core.wake_at(self.until, cx.waker().clone());
            drop(core);
            self.registered = true;
        }
        Poll::Pending
    }
}
