//! DRPC: rebuild-feed as a query that enters the running dataflow.
//!
//! A request for `user` enters the dataflow at epoch `t` and travels, by
//! user, to the feed-head bolt that owns the user. When epoch `t` is
//! complete there, the bolt answers with the newest `feed_size` entries of
//! the user's feed as of `t`, merged from the newest stories of each of the
//! user's interests (fan-in on read, reading only what the head needs), and
//! (in `active` mode) makes the answer the user's live head. Answers return
//! to the caller through [`Drpc`] by id, once epoch `t` is written.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::event::TypedId;
use crate::feed::FeedKey;

/// A rebuild request as it travels: `(user, request id)`. The id names the
/// worker whose process asked, in its high bits ([`Drpc::origin_worker`]).
pub type Request = (TypedId, u64);

/// A rebuild answer as it travels back: `(request id, the head)`.
pub type Answer = (u64, Vec<FeedKey>);

/// Request ids count in the low bits; the asking process's first worker is
/// above them.
const ORIGIN_SHIFT: u32 = 40;

/// Why a rebuild produced no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrpcError {
    /// No answer within the timeout (the topology is stalled or overloaded).
    #[error("rebuild-feed timed out after {0:?}")]
    Timeout(Duration),
    /// The topology stopped before answering.
    #[error("the topology stopped before answering")]
    Stopped,
}

/// The process-wide DRPC desk: queued requests, callers waiting for answers,
/// and which users have a live (materialized) feed in `active` mode.
#[derive(Default)]
pub struct Drpc {
    /// The first request id: this process's first worker, shifted.
    first_id: u64,
    next_id: AtomicU64,
    queue: Mutex<Vec<Request>>,
    waiting: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<Vec<FeedKey>>>>,
    active: Mutex<HashMap<TypedId, Instant>>,
    /// Answers and activations waiting for their epoch to be written.
    unwritten: Mutex<Vec<(u64, Release)>>,
    /// The worker threads, woken by a request so that it need not wait
    /// for an idle worker's next poll.
    workers: Mutex<Vec<std::thread::Thread>>,
    /// The latest epoch a worker of this process put requests into.
    requested_epoch: AtomicU64,
}

enum Release {
    Answer(u64, Vec<FeedKey>),
    Activate(TypedId),
}

impl Drpc {
    /// The desk of the process whose first worker is `first_worker`.
    ///
    /// ```
    /// use feedstorm::drpc::Drpc;
    /// let desk = Drpc::new(4);
    /// let (id, _answer) = desk.submit(feedstorm::event::TypedId::parse("user:rob").unwrap());
    /// assert_eq!(Drpc::origin_worker(id), 4);
    /// ```
    pub fn new(first_worker: usize) -> Drpc {
        Drpc {
            first_id: (first_worker as u64) << ORIGIN_SHIFT,
            ..Drpc::default()
        }
    }

    /// The worker (of the asking process) that request `id` is answered to.
    pub fn origin_worker(id: u64) -> u64 {
        id >> ORIGIN_SHIFT
    }

    /// Queues a rebuild of `user`; the receiver gets the head once answered.
    pub fn submit(&self, user: TypedId) -> (u64, tokio::sync::oneshot::Receiver<Vec<FeedKey>>) {
        let id = self.first_id + self.next_id.fetch_add(1, Ordering::SeqCst);
        let (answer, receiver) = tokio::sync::oneshot::channel();
        self.waiting.lock().expect("drpc lock").insert(id, answer);
        self.queue.lock().expect("drpc lock").push((user, id));
        for worker in self.workers.lock().expect("drpc lock").iter() {
            worker.unpark();
        }
        (id, receiver)
    }

    /// Notes that requests went into `epoch`: the process's other workers
    /// close it at once ([`Drpc::requested_epoch`]) instead of when their
    /// clock passes it, which a worker that sent epochs faster than one a
    /// millisecond is ahead of (by up to several).
    pub fn note_requests_in(&self, epoch: u64) {
        self.requested_epoch.fetch_max(epoch, Ordering::SeqCst);
    }

    /// The latest epoch a worker of this process put requests into.
    pub fn requested_epoch(&self) -> u64 {
        self.requested_epoch.load(Ordering::SeqCst)
    }

    /// Whether an answer waits for its epoch to be written (the workers
    /// then poll without parking, so that it is released at once).
    pub fn answers_pending(&self) -> bool {
        !self.unwritten.lock().expect("drpc lock").is_empty()
            || !self.waiting.lock().expect("drpc lock").is_empty()
    }

    /// Registers the calling worker thread to be woken by requests.
    pub fn register_worker(&self) {
        self.workers
            .lock()
            .expect("drpc lock")
            .push(std::thread::current());
    }

    /// Rebuilds `user`'s feed and waits for the answer (blocking).
    pub fn call_blocking(
        &self,
        user: TypedId,
        timeout: Duration,
    ) -> Result<Vec<FeedKey>, DrpcError> {
        let (id, receiver) = self.submit(user);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|_| DrpcError::Stopped)?;
        runtime.block_on(self.wait(id, receiver, timeout))
    }

    /// Waits for the answer to request `id`.
    pub async fn wait(
        &self,
        id: u64,
        receiver: tokio::sync::oneshot::Receiver<Vec<FeedKey>>,
        timeout: Duration,
    ) -> Result<Vec<FeedKey>, DrpcError> {
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(head)) => Ok(head),
            Ok(Err(_)) => Err(DrpcError::Stopped),
            Err(_) => {
                self.waiting.lock().expect("drpc lock").remove(&id);
                Err(DrpcError::Timeout(timeout))
            }
        }
    }

    /// Takes the queued requests (a worker puts them into the dataflow).
    pub fn take_requests(&self) -> Vec<Request> {
        std::mem::take(&mut *self.queue.lock().expect("drpc lock"))
    }

    /// Answers request `id` with the head as of `epoch`, once the epoch is
    /// written (so a read right after the answer finds the store as new).
    pub fn answer_at(&self, epoch: u64, id: u64, head: Vec<FeedKey>) {
        self.unwritten
            .lock()
            .expect("drpc lock")
            .push((epoch, Release::Answer(id, head)));
    }

    /// Marks `user` live once `epoch`, which wrote their head, is written.
    pub fn activate_at(&self, epoch: u64, user: &TypedId) {
        self.unwritten
            .lock()
            .expect("drpc lock")
            .push((epoch, Release::Activate(user.clone())));
    }

    /// Releases what waited for epochs before `frontier` (`None`: all).
    pub fn release_written(&self, frontier: Option<u64>) {
        let ready: Vec<Release> = {
            let mut unwritten = self.unwritten.lock().expect("drpc lock");
            if unwritten.is_empty() {
                return;
            }
            let (ready, later) = std::mem::take(&mut *unwritten)
                .into_iter()
                .partition(|(epoch, _)| frontier.is_none_or(|f| *epoch < f));
            *unwritten = later;
            ready.into_iter().map(|(_, release)| release).collect()
        };
        for release in ready {
            match release {
                Release::Activate(user) => self.activate(&user),
                Release::Answer(id, head) => {
                    if let Some(waiting) = self.waiting.lock().expect("drpc lock").remove(&id) {
                        let _ = waiting.send(head);
                    }
                }
            }
        }
    }

    /// Whether `user` has a live feed head (`active` mode), noting the read.
    pub fn touch_if_active(&self, user: &TypedId) -> bool {
        match self.active.lock().expect("drpc lock").get_mut(user) {
            Some(last_read) => {
                *last_read = Instant::now();
                true
            }
            None => false,
        }
    }

    /// Marks `user` live, read now.
    pub fn activate(&self, user: &TypedId) {
        self.active
            .lock()
            .expect("drpc lock")
            .insert(user.clone(), Instant::now());
    }

    /// Of `users`, those not read within `window`; they stop being live.
    /// (A user whose activation is not yet written is not idle.)
    pub fn evict_idle(&self, users: &HashSet<TypedId>, window: Duration) -> Vec<TypedId> {
        let mut active = self.active.lock().expect("drpc lock");
        let idle: Vec<TypedId> = users
            .iter()
            .filter(|u| active.get(*u).is_some_and(|read| read.elapsed() > window))
            .cloned()
            .collect();
        for user in &idle {
            active.remove(user);
        }
        idle
    }

    /// Number of live users (`active` mode).
    pub fn active_users(&self) -> usize {
        self.active.lock().expect("drpc lock").len()
    }
}
