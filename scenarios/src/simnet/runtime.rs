//! A deterministic single-threaded executor on virtual time. Ready tasks are polled in
//! the order they were woken; when none is ready, virtual time jumps to the next event
//! of the shared [`Core`] (a timer or a network delivery). No threads, no system clock.
//! Tasks may belong to a node: a crashed node's tasks are dropped at once, a paused
//! node's are not polled (their wake-ups wait) until it resumes.

use std::cell::Cell;
use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use kvs_net::TaskControl;

use super::core::{Core, WakeKey, lock};

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Wakes a task by queueing its id.
struct TaskWaker {
    id: usize,
    ready: Arc<Mutex<Ready>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        lock(&self.ready).woken.push_back(self.id);
    }
}

/// What a task's handle sees of it.
#[derive(Default)]
struct TaskState {
    finished: bool,
    joiners: Vec<Waker>,
}

/// The ids of tasks to poll, in wake order, and of tasks aborted since the executor last
/// looked (an aborted task is also queued, and ends instead of being polled).
#[derive(Default)]
struct Ready {
    woken: VecDeque<usize>,
    aborted: Vec<usize>,
}

impl TaskState {
    fn finish(&mut self) {
        self.finished = true;
        self.joiners.drain(..).for_each(Waker::wake);
    }
}

/// A task not adopted by the executor yet.
struct Spawned {
    future: Task,
    node: Option<usize>,
    state: Arc<Mutex<TaskState>>,
}

/// Tasks waiting to be adopted.
#[derive(Default)]
struct Pending {
    spawned: Vec<Spawned>,
    next_id: usize,
}

/// The executor's shared parts: cloned into every handle so tasks can spawn tasks.
#[derive(Clone, Default)]
pub(crate) struct Spawner {
    ready: Arc<Mutex<Ready>>,
    pending: Arc<Mutex<Pending>>,
}

impl Spawner {
    /// Queues a new task of `node` (none: the simulator's own); it is first polled at the
    /// next scheduling round.
    pub(crate) fn spawn(
        &self,
        task: impl Future<Output = ()> + Send + 'static,
        node: Option<usize>,
    ) -> SimTask {
        let state = Arc::new(Mutex::new(TaskState::default()));
        let mut pending = lock(&self.pending);
        let id = pending.next_id;
        pending.next_id += 1;
        pending.spawned.push(Spawned {
            future: Box::pin(task),
            node,
            state: Arc::clone(&state),
        });
        SimTask {
            id,
            state,
            ready: Arc::clone(&self.ready),
        }
    }
}

/// A handle to a task on the simulator's executor.
pub struct SimTask {
    id: usize,
    state: Arc<Mutex<TaskState>>,
    ready: Arc<Mutex<Ready>>,
}

impl TaskControl for SimTask {
    fn abort(&self) {
        let state = lock(&self.state);
        if !state.finished {
            let mut ready = lock(&self.ready);
            ready.aborted.push(self.id);
            ready.woken.push_back(self.id);
        }
    }

    fn poll_finished(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.state);
        if state.finished {
            return Poll::Ready(());
        }
        state.joiners.push(cx.waker().clone());
        Poll::Pending
    }

    fn is_finished(&self) -> bool {
        lock(&self.state).finished
    }
}

thread_local! {
    /// The virtual time of the network this thread runs, for log lines.
    static VIRTUAL_NOW: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// The virtual time of the simulated network last run on this thread (what the log lines
/// of `KVS_SIM_LOG` are stamped with).
pub fn virtual_now() -> Duration {
    VIRTUAL_NOW.get()
}

/// A task the executor holds.
struct Slot {
    future: Task,
    node: Option<usize>,
    state: Arc<Mutex<TaskState>>,
    /// Queues the task's id: made once, handed to every poll.
    waker: Waker,
}

/// The executor: the tasks and the loop that runs them.
#[derive(Default)]
pub(crate) struct Executor {
    spawner: Spawner,
    tasks: Vec<Option<Slot>>,
    /// Ids woken while their node was paused, in wake order.
    parked: Vec<usize>,
    /// The nodes whose tasks are not polled.
    paused: BTreeSet<usize>,
    /// Whether each task (by id) was aborted: read at every poll, so kept here rather
    /// than with the task (looking it up there was 4 % of 100 nodes, in cache misses).
    aborted: Vec<bool>,
}

impl Executor {
    /// A handle to spawn tasks.
    pub(crate) fn spawner(&self) -> Spawner {
        self.spawner.clone()
    }

    /// Moves newly spawned tasks in and marks them ready.
    fn adopt(&mut self) {
        let new: Vec<Spawned> = {
            let mut pending = lock(&self.spawner.pending);
            if pending.spawned.is_empty() {
                return;
            }
            std::mem::take(&mut pending.spawned)
        };
        for task in new {
            let id = self.tasks.len();
            let waker = Waker::from(Arc::new(TaskWaker {
                id,
                ready: Arc::clone(&self.spawner.ready),
            }));
            self.tasks.push(Some(Slot {
                future: task.future,
                node: task.node,
                state: task.state,
                waker,
            }));
            lock(&self.spawner.ready).woken.push_back(id);
        }
    }

    /// Polls ready tasks until none is ready.
    fn poll_ready(&mut self) {
        loop {
            self.adopt();
            let next = {
                let mut ready = lock(&self.spawner.ready);
                for id in ready.aborted.drain(..) {
                    if self.aborted.len() <= id {
                        self.aborted.resize(id + 1, false);
                    }
                    self.aborted[id] = true;
                }
                ready.woken.pop_front()
            };
            let Some(id) = next else {
                return;
            };
            let Some(Some(slot)) = self.tasks.get_mut(id) else {
                continue;
            };
            if self.aborted.get(id).is_some_and(|&aborted| aborted) {
                self.end(id);
                continue;
            }
            if slot.node.is_some_and(|node| self.paused.contains(&node)) {
                self.parked.push(id);
                continue;
            }
            // What a node's task logs names the node (`KVS_SIM_LOG`).
            let _node_span = slot
                .node
                .map(|node| tracing::info_span!("sim", node = node + 1).entered());
            if slot
                .future
                .as_mut()
                .poll(&mut Context::from_waker(&slot.waker))
                .is_ready()
            {
                self.end(id);
            }
        }
    }

    /// Drops task `id` and tells whoever waits for it.
    fn end(&mut self, id: usize) {
        if let Some(slot) = self.tasks.get_mut(id).and_then(Option::take) {
            lock(&slot.state).finish();
        }
    }

    /// Drops every task of `node` (a crash: nothing of it runs on).
    pub(crate) fn kill_node(&mut self, node: usize) {
        self.adopt();
        let ids: Vec<usize> = (0..self.tasks.len())
            .filter(|&id| matches!(&self.tasks[id], Some(slot) if slot.node == Some(node)))
            .collect();
        ids.into_iter().for_each(|id| self.end(id));
    }

    /// Stops (`true`) or resumes polling `node`'s tasks; wake-ups meanwhile are kept.
    pub(crate) fn set_paused(&mut self, node: usize, paused: bool) {
        if paused {
            self.paused.insert(node);
            return;
        }
        self.paused.remove(&node);
        let (theirs, others): (Vec<usize>, Vec<usize>) =
            std::mem::take(&mut self.parked).into_iter().partition(
                |&id| matches!(&self.tasks.get(id), Some(Some(slot)) if slot.node == Some(node)),
            );
        self.parked = others;
        lock(&self.spawner.ready).woken.extend(theirs);
    }

    /// Runs tasks and events until virtual time `end` (or until nothing is left to do);
    /// returns the virtual time reached.
    pub(crate) fn run_until(&mut self, core: &Arc<Mutex<Core>>, end: Duration) -> Duration {
        loop {
            self.poll_ready();
            let mut c = lock(core);
            let more = c.step(end);
            if !more {
                c.now = c.now.max(end);
            }
            VIRTUAL_NOW.set(c.now);
            if !more {
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
    /// The wake-up it scheduled, forgotten when it is dropped before its time.
    registered: Option<WakeKey>,
}

impl Sleep {
    pub(crate) fn new(core: Arc<Mutex<Core>>, until: Duration) -> Self {
        Self {
            core,
            until,
            registered: None,
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
        if self.registered.is_none() {
            let key = core.wake_at(self.until, cx.waker().clone());
            drop(core);
            self.registered = Some(key);
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.registered.take() {
            lock(&self.core).cancel_wake(key);
        }
    }
}
