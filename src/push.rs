//! Push: feed-head changes handed to the apps that stream them
//! (`GET /feeds/USER/stream`, Server-Sent Events) as each epoch is written.
//!
//! The sink publishes each epoch's head changes here once it wrote them
//! ([`Pushes::publish`]); they are handed on once the epoch is written on
//! every worker ([`Pushes::release`], when the probe passes it), so that the
//! activities an added entry names are in the store too. Each open stream
//! holds a [`Subscription`] to one user, a bounded queue of that user's
//! epochs. Publishing never waits: a
//! stream whose queue is full (its client stopped reading) is cut off and
//! told so, so a slow client costs at most its queue and never slows the
//! topology. A process pushes what its own workers write, which is every
//! change of the users it owns.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::event::TypedId;
use crate::feed::{FeedKey, HeadChange};

/// Epochs a stream may have queued (written, not yet sent to its client)
/// before it is cut off.
pub const STREAM_QUEUE: usize = 64;

/// One written epoch's changes to one user's head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Push {
    /// Entries that entered (`+1`) and left (`-1`) the head, as written.
    Changes {
        /// The changes, in no particular order.
        changes: Vec<(FeedKey, isize)>,
        /// When the epoch was written everywhere (for the push latency).
        written: Instant,
    },
    /// The head was replaced whole (a recovery): read it again.
    Reset,
}

/// The streams open on this process, by user.
pub struct Pushes {
    users: Mutex<HashMap<TypedId, Vec<Subscriber>>>,
    /// Changes of subscribed users by epoch, until every worker wrote it.
    held: Mutex<BTreeMap<u64, Vec<HeadChange>>>,
    /// Held while epochs are taken from `held` and handed on: every
    /// worker's driver releases, and without it one could hand on a later
    /// epoch before another hands on an earlier one (a stream would then
    /// replay a remove and an add of one entry in the wrong order).
    releasing: Mutex<()>,
    open: AtomicUsize,
    next_id: AtomicU64,
    /// Epochs a stream may have queued before it is cut off.
    queue: usize,
    /// Microseconds from an epoch written everywhere to its event sent.
    latency: Mutex<Histogram<u32>>,
    cut: AtomicU64,
}

struct Subscriber {
    id: u64,
    sender: mpsc::Sender<Push>,
    cut_off: Arc<AtomicBool>,
}

/// One open stream's queue of its user's written epochs. Dropping it
/// unsubscribes.
pub struct Subscription {
    /// The user's epochs, in the order they were written.
    pub receiver: mpsc::Receiver<Push>,
    cut_off: Arc<AtomicBool>,
    user: TypedId,
    id: u64,
    pushes: Arc<Pushes>,
}

impl Subscription {
    /// Whether the stream fell behind by more than its queue and was cut
    /// off (its receiver then ends after what was queued).
    pub fn cut_off(&self) -> bool {
        self.cut_off.load(Ordering::SeqCst)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.pushes.unsubscribe(&self.user, self.id);
    }
}

impl std::fmt::Debug for Pushes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pushes")
            .field("open", &self.open())
            .field("queue", &self.queue)
            .finish()
    }
}

impl Default for Pushes {
    fn default() -> Pushes {
        Pushes::new()
    }
}

impl Pushes {
    /// No streams yet; each may queue up to [`STREAM_QUEUE`] epochs.
    pub fn new() -> Pushes {
        Pushes::with_queue(STREAM_QUEUE)
    }

    /// No streams yet; each may queue up to `queue` epochs.
    pub fn with_queue(queue: usize) -> Pushes {
        Pushes {
            users: Mutex::new(HashMap::new()),
            held: Mutex::new(BTreeMap::new()),
            releasing: Mutex::new(()),
            open: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            queue: queue.max(1),
            latency: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("histogram bounds"),
            ),
            cut: AtomicU64::new(0),
        }
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// A stream sent the event of an epoch written everywhere at `written`.
    pub fn sent(&self, written: Instant) {
        let micros = (written.elapsed().as_micros() as u64).clamp(1, 3_600_000_000);
        let _ = self.latency.lock().expect("pushes lock").record(micros);
    }

    /// `{"streams_open", "streams_cut_off", "events", "latency_ms_p50",
    /// "latency_ms_p99"}`: latency from an epoch written on every worker to
    /// its event handed to the connection.
    pub fn to_json(&self) -> Value {
        let latency = self.latency.lock().expect("pushes lock");
        let ms =
            |q: f64| (!latency.is_empty()).then(|| latency.value_at_quantile(q) as f64 / 1000.0);
        json!({
            "streams_open": self.open(),
            "streams_cut_off": self.cut.load(Ordering::SeqCst),
            "events": latency.len(),
            "latency_ms_p50": ms(0.5),
            "latency_ms_p99": ms(0.99),
        })
    }

    /// Opens a stream of `user`'s head changes from the next epoch written.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use feedstorm::event::TypedId;
    /// use feedstorm::feed::FeedKey;
    /// use feedstorm::push::{Push, Pushes};
    ///
    /// let pushes = Arc::new(Pushes::with_queue(2));
    /// let rob = TypedId::parse("user:rob").unwrap();
    /// let mut stream = pushes.subscribe(rob.clone());
    /// let key = FeedKey::new(5, "a1");
    /// pushes.publish(7, &[(rob.clone(), key.clone(), 1)]);
    /// assert!(stream.receiver.try_recv().is_err()); // not yet written everywhere
    /// pushes.release(Some(8));
    /// match stream.receiver.try_recv().unwrap() {
    ///     Push::Changes { changes, .. } => assert_eq!(changes, [(key.clone(), 1)]),
    ///     Push::Reset => unreachable!(),
    /// }
    /// // Two more epochs fit; a third finds the queue full: cut off.
    /// pushes.publish(8, &[(rob.clone(), key.clone(), -1)]);
    /// pushes.publish(9, &[(rob.clone(), key.clone(), 1)]);
    /// pushes.publish(10, &[(rob.clone(), key, -1)]);
    /// pushes.release(None);
    /// assert!(stream.cut_off());
    /// assert_eq!(pushes.open(), 0);
    /// ```
    pub fn subscribe(self: &Arc<Self>, user: TypedId) -> Subscription {
        let (sender, receiver) = mpsc::channel(self.queue);
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let cut_off = Arc::new(AtomicBool::new(false));
        let subscriber = Subscriber {
            id,
            sender,
            cut_off: cut_off.clone(),
        };
        let mut users = self.users.lock().expect("pushes lock");
        users.entry(user.clone()).or_default().push(subscriber);
        self.open.fetch_add(1, Ordering::SeqCst);
        Subscription {
            receiver,
            cut_off,
            user,
            id,
            pushes: self.clone(),
        }
    }

    fn unsubscribe(&self, user: &TypedId, id: u64) {
        // Called from a destructor: never panic here (a poisoned lock is
        // still a map of subscribers).
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(subscribers) = users.get_mut(user) {
            let before = subscribers.len();
            subscribers.retain(|s| s.id != id);
            self.open
                .fetch_sub(before - subscribers.len(), Ordering::SeqCst);
            if subscribers.is_empty() {
                users.remove(user);
            }
        }
    }

    /// Holds the head changes of `epoch` that a worker's sink wrote, for
    /// the users with streams open, until [`Pushes::release`].
    pub fn publish(&self, epoch: u64, feed: &[HeadChange]) {
        if self.open() == 0 {
            return;
        }
        let users = self.users.lock().expect("pushes lock");
        let wanted: Vec<HeadChange> = feed
            .iter()
            .filter(|(user, _, _)| users.contains_key(user))
            .cloned()
            .collect();
        drop(users);
        if !wanted.is_empty() {
            let mut held = self.held.lock().expect("pushes lock");
            held.entry(epoch).or_default().extend(wanted);
        }
    }

    /// Hands the held epochs before `frontier` (every epoch if `None`),
    /// now written on every worker, to their streams, oldest first. Never
    /// waits: a stream whose queue is full is cut off.
    pub fn release(&self, frontier: Option<u64>) {
        let _in_order = self.releasing.lock().unwrap_or_else(|e| e.into_inner());
        let ready: Vec<Vec<HeadChange>> = {
            let mut held = self.held.lock().expect("pushes lock");
            let keep = match frontier {
                Some(frontier) => held.split_off(&frontier),
                None => BTreeMap::new(),
            };
            std::mem::replace(&mut *held, keep).into_values().collect()
        };
        for feed in ready {
            self.hand_on(&feed);
        }
    }

    fn hand_on(&self, feed: &[HeadChange]) {
        let written = Instant::now();
        let mut users = self.users.lock().expect("pushes lock");
        let mut epoch: HashMap<&TypedId, Push> = HashMap::new();
        for (user, key, diff) in feed {
            if !users.contains_key(user) {
                continue;
            }
            let push = epoch.entry(user).or_insert_with(|| Push::Changes {
                changes: Vec::new(),
                written,
            });
            match (push, *diff) {
                (push, 0) => *push = Push::Reset,
                (Push::Changes { changes, .. }, diff) => changes.push((key.clone(), diff)),
                (Push::Reset, _) => {}
            }
        }
        for (user, push) in epoch {
            let Some(subscribers) = users.get_mut(user) else {
                continue;
            };
            let before = subscribers.len();
            subscribers.retain(|s| {
                let sent = s.sender.try_send(push.clone()).is_ok();
                if !sent && !s.sender.is_closed() {
                    s.cut_off.store(true, Ordering::SeqCst);
                    self.cut.fetch_add(1, Ordering::SeqCst);
                }
                sent
            });
            self.open
                .fetch_sub(before - subscribers.len(), Ordering::SeqCst);
            if subscribers.is_empty() {
                users.remove(user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::FeedKey;

    /// Two drivers releasing at once: a stream still receives the epochs
    /// in the order they were written.
    #[test]
    fn epochs_released_by_two_drivers_arrive_in_order() {
        const EPOCHS: u64 = 2_000;
        let pushes = Arc::new(Pushes::with_queue(EPOCHS as usize + 1));
        let rob = TypedId::parse("user:rob").unwrap();
        let mut stream = pushes.subscribe(rob.clone());
        for epoch in 0..EPOCHS {
            pushes.publish(epoch, &[(rob.clone(), FeedKey::new(epoch as i64, "a"), 1)]);
        }
        let drivers: Vec<_> = (0..2)
            .map(|_| {
                let pushes = pushes.clone();
                std::thread::spawn(move || {
                    for frontier in 1..=EPOCHS {
                        pushes.release(Some(frontier));
                    }
                })
            })
            .collect();
        for driver in drivers {
            driver.join().unwrap();
        }
        let mut times = Vec::new();
        while let Ok(Push::Changes { changes, .. }) = stream.receiver.try_recv() {
            times.extend(changes.iter().map(|(key, _)| key.time));
        }
        let in_order: Vec<i64> = (0..EPOCHS as i64).collect();
        assert_eq!(times, in_order);
    }
}
