//! The process's one hashing pool (DESIGN §6, §8): every argon2 run of every controller and
//! of the verifier's slow path happens on one of `--hash-workers` dedicated threads, so
//! memory stays at workers × argon2 memory whatever the backlog.
//!
//! Each component asks through its own [`Caller`]; waiting callers are served round-robin,
//! so a backlog of one (a pool of 10 000 keys to hash) cannot starve another (a gateway
//! waiting on the verifier). Each caller's queue is bounded. A job holds its caller's
//! queue slot until it has finished running, even when whoever asked has stopped waiting:
//! a client that hangs up cannot free room for more work than the pool can do. A job whose
//! asker is gone before it starts is skipped.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

thread_local! {
    static ON_POOL: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is one of a hashing pool's workers (argon2 entry points
/// assert this in debug builds).
pub fn on_hashing_thread() -> bool {
    ON_POOL.with(Cell::get)
}

/// Why a job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HashPoolError {
    #[error("the hashing pool's queue for {0} is full")]
    Full(&'static str),
    #[error("the hashing pool has stopped")]
    Stopped,
}

type Job = Box<dyn FnOnce() + Send>;

struct Queue {
    jobs: VecDeque<(Job, Arc<dyn Fn() -> bool + Send + Sync>)>,
}

#[derive(Default)]
struct Queues {
    callers: Vec<Queue>,
    /// The caller to look at first next time (round-robin).
    next: usize,
    stopped: bool,
}

impl Queues {
    /// The next job, taking callers in turn.
    fn pop(&mut self) -> Option<(Job, Arc<dyn Fn() -> bool + Send + Sync>)> {
        let n = self.callers.len();
        for i in 0..n {
            let at = (self.next + i) % n;
            if let Some(job) = self.callers[at].jobs.pop_front() {
                self.next = (at + 1) % n;
                return Some(job);
            }
        }
        None
    }

    fn queued(&self) -> usize {
        self.callers.iter().map(|q| q.jobs.len()).sum()
    }
}

struct Inner {
    queues: Mutex<Queues>,
    wake: Condvar,
    workers: usize,
    running: AtomicUsize,
    peak_running: AtomicUsize,
    started: AtomicU64,
    skipped: AtomicU64,
}

/// Counters of a pool, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub workers: usize,
    /// Jobs running now.
    pub running: usize,
    /// The most jobs ever running at once.
    pub peak_running: usize,
    /// Jobs waiting for a worker.
    pub queued: usize,
    /// Jobs started so far.
    pub started: u64,
    /// Jobs dropped before they started because their asker was gone.
    pub skipped: u64,
}

/// A pool of hashing threads. Cloning shares the pool; the threads stop when the last
/// clone and every [`Caller`] is dropped.
#[derive(Clone)]
pub struct HashPool {
    inner: Arc<Inner>,
    _stop: Arc<StopOnDrop>,
}

struct StopOnDrop(Arc<Inner>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stopped = true;
        self.0.wake.notify_all();
    }
}

impl std::fmt::Debug for HashPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashPool")
            .field("stats", &self.stats())
            .finish()
    }
}

/// The default number of workers: the number of cores.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

impl HashPool {
    /// Starts `workers` threads (at least one).
    pub fn new(workers: usize) -> Self {
        let workers = workers.max(1);
        let inner = Arc::new(Inner {
            queues: Mutex::new(Queues::default()),
            wake: Condvar::new(),
            workers,
            running: AtomicUsize::new(0),
            peak_running: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        });
        for i in 0..workers {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name(format!("keyward-hash-{i}"))
                .spawn(move || work(&inner))
                .expect("the OS starts a hashing thread");
        }
        Self {
            _stop: Arc::new(StopOnDrop(inner.clone())),
            inner,
        }
    }

    /// A new caller with its own queue of at most `capacity` jobs (queued or running).
    pub fn caller(&self, name: &'static str, capacity: usize) -> Caller {
        let mut q = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
        q.callers.push(Queue {
            jobs: VecDeque::new(),
        });
        Caller {
            pool: self.clone(),
            index: q.callers.len() - 1,
            name,
            slots: Arc::new(Semaphore::new(capacity.max(1))),
        }
    }

    pub fn stats(&self) -> Stats {
        let queued = self
            .inner
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .queued();
        Stats {
            workers: self.inner.workers,
            running: self.inner.running.load(Ordering::SeqCst),
            peak_running: self.inner.peak_running.load(Ordering::SeqCst),
            queued,
            started: self.inner.started.load(Ordering::SeqCst),
            skipped: self.inner.skipped.load(Ordering::SeqCst),
        }
    }
}

fn work(inner: &Inner) {
    ON_POOL.with(|p| p.set(true));
    loop {
        let (job, wanted) = {
            let mut q = inner.queues.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if q.stopped {
                    return;
                }
                if let Some(job) = q.pop() {
                    break job;
                }
                q = inner.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        if !wanted() {
            inner.skipped.fetch_add(1, Ordering::SeqCst);
            drop(job);
            continue;
        }
        let now = inner.running.fetch_add(1, Ordering::SeqCst) + 1;
        inner.peak_running.fetch_max(now, Ordering::SeqCst);
        inner.started.fetch_add(1, Ordering::SeqCst);
        job();
        inner.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One component's way into the pool.
#[derive(Clone)]
pub struct Caller {
    pool: HashPool,
    index: usize,
    name: &'static str,
    /// Queue slots: held from submission until the job has run (or been skipped).
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller").field("name", &self.name).finish()
    }
}

impl Caller {
    /// Runs `f` on a hashing thread, waiting for a queue slot first.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, HashPoolError> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HashPoolError::Stopped)?;
        self.submit(permit, f).await
    }

    /// Runs `f` on a hashing thread, or fails at once when this caller's queue is full.
    pub async fn try_run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, HashPoolError> {
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| HashPoolError::Full(self.name))?;
        self.submit(permit, f).await
    }

    /// Runs `f` on a hashing thread and blocks this (non-async) thread until it is done;
    /// fails at once when this caller's queue is full.
    pub fn run_blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, HashPoolError> {
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| HashPoolError::Full(self.name))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let job: Job = Box::new(move || {
            let _slot = permit;
            let _ = tx.send(f());
        });
        self.push(job, Arc::new(|| true))?;
        rx.recv().map_err(|_| HashPoolError::Stopped)
    }

    async fn submit<R: Send + 'static>(
        &self,
        permit: OwnedSemaphorePermit,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, HashPoolError> {
        let (tx, rx) = oneshot::channel();
        let asker = Arc::new(Mutex::new(Some(tx)));
        let wanted = {
            let asker = asker.clone();
            Arc::new(move || {
                asker
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .is_some_and(|tx| !tx.is_closed())
            })
        };
        let job: Job = Box::new(move || {
            // The slot is released when the job is done, not when the asker stops waiting.
            let _slot = permit;
            let out = f();
            if let Some(tx) = asker.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = tx.send(out);
            }
        });
        self.push(job, wanted)?;
        rx.await.map_err(|_| HashPoolError::Stopped)
    }

    fn push(
        &self,
        job: Job,
        wanted: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> Result<(), HashPoolError> {
        let inner = &self.pool.inner;
        let mut q = inner.queues.lock().unwrap_or_else(|p| p.into_inner());
        if q.stopped {
            return Err(HashPoolError::Stopped);
        }
        q.callers[self.index].jobs.push_back((job, wanted));
        drop(q);
        inner.wake.notify_one();
        Ok(())
    }

    /// The pool this caller uses.
    pub fn pool(&self) -> &HashPool {
        &self.pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn runs_jobs_on_pool_threads_only() {
        let pool = HashPool::new(2);
        let caller = pool.caller("test", 8);
        assert!(!on_hashing_thread());
        assert!(caller.run(on_hashing_thread).await.expect("runs"));
        assert!(
            caller
                .run_blocking(on_hashing_thread)
                .expect("runs blocking")
        );
    }

    #[tokio::test]
    async fn never_more_than_the_workers_at_once() {
        let pool = HashPool::new(2);
        let caller = pool.caller("test", 1000);
        let jobs: Vec<_> = (0..50)
            .map(|_| {
                let c = caller.clone();
                tokio::spawn(
                    async move { c.run(|| std::thread::sleep(Duration::from_millis(2))).await },
                )
            })
            .collect();
        for j in jobs {
            j.await.expect("task").expect("job");
        }
        let stats = pool.stats();
        assert_eq!(stats.started, 50);
        assert_eq!(stats.peak_running, 2, "{stats:?}");
    }

    #[tokio::test]
    async fn a_backlog_of_one_caller_does_not_starve_another() {
        let pool = HashPool::new(2);
        let bulk = pool.caller("bulk", 2000);
        let urgent = pool.caller("urgent", 8);
        let order = Arc::new(Mutex::new(Vec::<&'static str>::new()));
        let mut tasks = Vec::new();
        for _ in 0..1000 {
            let (c, order) = (bulk.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                c.run(move || {
                    order.lock().expect("lock").push("bulk");
                    std::thread::sleep(Duration::from_millis(1));
                })
                .await
            }));
        }
        // Wait until the bulk backlog is queued and running.
        while pool.stats().started < 10 || pool.stats().queued < 500 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let before = order.lock().expect("lock").len();
        let o = order.clone();
        urgent
            .run(move || o.lock().expect("lock").push("urgent"))
            .await
            .expect("urgent job");
        let order = order.lock().expect("lock").clone();
        let at = order.iter().position(|w| *w == "urgent").expect("ran");
        assert!(
            at - before <= 2,
            "the urgent job started within the next 2 (workers) starts: {} bulk jobs went first",
            at - before
        );
        for t in tasks {
            t.await.expect("task").expect("job");
        }
    }

    #[tokio::test]
    async fn a_job_stays_counted_after_its_asker_left_and_unwanted_jobs_are_skipped() {
        let pool = HashPool::new(1);
        let caller = pool.caller("test", 2);
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let g = gate.clone();
        let first = {
            let c = caller.clone();
            tokio::spawn(async move {
                c.run(move || {
                    let (lock, cv) = &*g;
                    let mut open = lock.lock().expect("lock");
                    while !*open {
                        open = cv.wait(open).expect("wait");
                    }
                })
                .await
            })
        };
        while pool.stats().running == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The asker hangs up; its job keeps running and keeps its slot.
        first.abort();
        let _ = first.await;
        // One slot left: a second job queues (its asker also leaves), a third is refused.
        let second = {
            let c = caller.clone();
            tokio::spawn(async move { c.run(|| ()).await })
        };
        while pool.stats().queued == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            caller.try_run(|| ()).await,
            Err(HashPoolError::Full("test"))
        );
        second.abort();
        let _ = second.await;
        assert_eq!(
            pool.stats().running,
            1,
            "the abandoned job is still running"
        );
        {
            let (lock, cv) = &*gate;
            *lock.lock().expect("lock") = true;
            cv.notify_all();
        }
        caller.run(|| ()).await.expect("room again");
        let stats = pool.stats();
        assert_eq!((stats.started, stats.skipped), (2, 1), "{stats:?}");
    }
}
