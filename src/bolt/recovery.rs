//! Recovery on a store that outlives the process (Redis): after a restart a
//! stateful bolt writes nothing until the topology has caught up (the old
//! state keeps serving), then writes its whole state at once. The feed-head
//! and digest bolts share this gate.

use std::sync::Arc;

use timely::dataflow::operators::Capability;
use timely::progress::frontier::MutableAntichain;

use crate::error::Result;
use crate::event::TypedId;
use crate::grouping::route;
use crate::status::Status;
use crate::store::Store;

/// Holds an operator's output back while the topology recovers.
pub struct RecoveryGate {
    /// The capability held at the input frontier, to write the recovered
    /// state with when recovery ends, and the store to recover into.
    held: Option<(Capability<u64>, Arc<dyn Store>)>,
}

impl RecoveryGate {
    /// A gate that holds `cap` when there is a store to recover into, and
    /// is open at once otherwise.
    pub fn new(cap: Option<Capability<u64>>, recover_into: Option<Arc<dyn Store>>) -> RecoveryGate {
        RecoveryGate {
            held: cap.zip(recover_into),
        }
    }

    /// Whether output is held back (the state is written whole later).
    pub fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// Hands an epoch's `items` to `give`, or drops them while holding (the
    /// recovered state is written whole at the end); `items` is left empty.
    pub fn pass<T>(&self, items: &mut Vec<T>, give: impl FnOnce(std::vec::Drain<'_, T>)) {
        if self.holding() {
            items.clear();
        } else {
            give(items.drain(..));
        }
    }

    /// Call after each activation. Once the topology has recovered, `write`
    /// gets the held capability and the store to emit the whole state, and
    /// the gate opens; until then the capability follows the inputs.
    pub fn step(
        &mut self,
        status: &Status,
        frontiers: &[MutableAntichain<u64>],
        write: impl FnOnce(&Capability<u64>, &dyn Store),
    ) {
        let Some((cap, store)) = self.held.as_mut() else {
            return;
        };
        if status.recovered() {
            write(cap, store.as_ref());
            status.recovery_emitted(*cap.time());
            self.held = None;
        } else {
            let least = frontiers
                .iter()
                .filter_map(|f| f.frontier().first().copied())
                .min();
            match least {
                Some(time) => cap.downgrade(&time),
                None => self.held = None,
            }
        }
    }
}

/// Of the users a store lists (`stored`), those that worker `index` of
/// `peers` owns but no longer `has`: their stored state is stale. A store
/// that cannot list them is logged, and their stale state stays until touched.
pub fn stale_users(
    stored: Result<Vec<TypedId>>,
    index: usize,
    peers: usize,
    has: impl Fn(&TypedId) -> bool,
) -> Vec<TypedId> {
    let stored = stored.unwrap_or_else(|error| {
        tracing::warn!(%error, "cannot list stored users; stale state stays until touched");
        Vec::new()
    });
    stored
        .into_iter()
        .filter(|user| route(user) % peers as u64 == index as u64 && !has(user))
        .collect()
}
