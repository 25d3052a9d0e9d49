//! The sink bolt: writes each complete epoch to the store, then lets the
//! epoch's progress through. A probe after the sink therefore passes an
//! epoch only once everything it caused is written (Storm's acking).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::{Operator, OutputBuilderSession};
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::bolt::feed_head::HeadChange;
use crate::bolt::stories::ActivityChange;
use crate::digest::DigestChange;
use crate::push::Pushes;
use crate::retry::Backoff;
use crate::status::Status;
use crate::store::{Store, WriteBatch};

/// One write the sink applies: what the bolts emit for the store.
#[derive(Clone, Debug)]
pub enum Write {
    /// A feed-head change.
    Head(HeadChange),
    /// A digest or notification change.
    Digest(DigestChange),
    /// An activity stored or removed.
    Activity(ActivityChange),
}

/// Writes the bolts' changes to a store.
pub trait WriteTo<'scope> {
    /// Applies each epoch's writes as one [`WriteBatch`], retrying with
    /// back-off while the store fails (the worker stalls, so its spouts stop
    /// pulling: back-pressure). The returned stream carries no data; its
    /// frontier passes an epoch once the epoch is written.
    /// Each written epoch's head changes go to `pushes`, for the open streams.
    fn write_to(
        self,
        store: Arc<dyn Store>,
        status: Arc<Status>,
        pushes: Arc<Pushes>,
    ) -> StreamVec<'scope, u64, ()>;
}

impl<'scope> WriteTo<'scope> for StreamVec<'scope, u64, Write> {
    fn write_to(
        self,
        store: Arc<dyn Store>,
        status: Arc<Status>,
        pushes: Arc<Pushes>,
    ) -> StreamVec<'scope, u64, ()> {
        let run_ms = status.run_ms();
        self.unary_frontier(Pipeline, "WriteTo", move |_cap, _info| {
            // Each open epoch's writes, sorted into a batch as they arrive;
            // a written batch's buffers serve the next epoch.
            let mut epochs: BTreeMap<u64, (Capability<u64>, WriteBatch)> = BTreeMap::new();
            let mut spare = WriteBatch::default();
            move |(writes, frontier),
                  _output: &mut OutputBuilderSession<
                '_,
                u64,
                CapacityContainerBuilder<Vec<()>>,
            >| {
                writes.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return };
                    let (_, batch) = epochs
                        .entry(time)
                        .or_insert_with(|| (cap.delayed(&time, 0), std::mem::take(&mut spare)));
                    for write in data.drain(..) {
                        match write {
                            Write::Head(change) => batch.feed.push(change),
                            Write::Digest(change) => batch.digests.push(change),
                            Write::Activity(ActivityChange::Put(a)) => batch.puts.push(a),
                            Write::Activity(ActivityChange::Remove(id)) => batch.removes.push(id),
                        }
                    }
                });
                while let Some(entry) = epochs.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let epoch = *entry.key();
                    // Dropping the capability releases the epoch downstream.
                    let (_cap, mut batch) = entry.remove();
                    if !batch.is_empty() {
                        batch.written_at = run_ms + epoch;
                        apply_with_retry(store.as_ref(), &batch, &status);
                        pushes.publish(epoch, &batch.feed);
                    }
                    batch.clear(1 << 16);
                    spare = batch;
                }
            }
        })
    }
}

/// Applies `batch`, waiting with the one back-off policy while the store
/// fails: a store that is down stalls the worker (back-pressure) until it
/// is back, since an epoch the sink gave up on would be lost. A final error
/// (a password or permission that no longer passes) stops the topology
/// instead, without acking: the next start writes the epoch again.
fn apply_with_retry(store: &dyn Store, batch: &WriteBatch, status: &Status) {
    let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(2));
    loop {
        match store.apply(batch) {
            Ok(()) => {
                status.set_sink_ok(true);
                status.add_head_changes(batch.feed.len() as u64);
                return;
            }
            Err(error) => {
                if status.abandoned() {
                    // Not acked: the workers stop before acking this epoch.
                    return;
                }
                if !error.is_retryable() {
                    tracing::error!(%error, "sink write failed for good; stopping without acking");
                    status.set_failed();
                    status.abandon();
                    return;
                }
                if status.set_sink_ok(false) {
                    tracing::warn!(%error, "sink write failed; retrying with back-off");
                }
                backoff.wait();
            }
        }
    }
}
