//! Recovery on a store that outlives the process (Redis): after a restart a
//! stateful bolt writes nothing until the topology has caught up (the old
//! state keeps serving), then writes the state of every user whose stored
//! state may be stale. After a full replay that is every user. After a
//! resume from a checkpoint the store already holds the checkpoint's
//! state, except for two kinds of users, and only they are rewritten:
//! those the store records as written since the checkpoint
//! ([`Store::written_since`]: the run before wrote epochs after it), and
//! those whose state changed in an epoch replayed since (a user whose
//! state ended where the checkpoint left it, and who was not written
//! since, holds the right state already). The feed-head and digest bolts
//! share this gate.

use std::collections::HashSet;
use std::sync::Arc;

use timely::dataflow::operators::Capability;
use timely::progress::frontier::MutableAntichain;

use crate::checkpoint::RESTORE_EPOCHS;
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
    /// Users with a change in an epoch after the restore epochs, while held.
    changed: HashSet<TypedId>,
}

/// An output change of a recovering bolt: it changes one user's state.
pub trait UserChange {
    /// The user whose state it changes.
    fn user(&self) -> &TypedId;
}

impl UserChange for crate::feed::HeadChange {
    fn user(&self) -> &TypedId {
        &self.0
    }
}

impl UserChange for crate::digest::DigestChange {
    fn user(&self) -> &TypedId {
        &self.user
    }
}

/// Which users a recovery writes whole: all, or only these.
pub type Only<'a> = Option<&'a HashSet<TypedId>>;

impl RecoveryGate {
    /// A gate that holds `cap` when there is a store to recover into, and
    /// is open at once otherwise.
    pub fn new(cap: Option<Capability<u64>>, recover_into: Option<Arc<dyn Store>>) -> RecoveryGate {
        RecoveryGate {
            held: cap.zip(recover_into),
            changed: HashSet::new(),
        }
    }

    /// Whether output is held back (the state is written whole later).
    pub fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// Hands epoch `time`'s `items` to `give`, or, while holding, notes the
    /// users they change and drops them; `items` is left empty.
    pub fn pass<T: UserChange>(
        &mut self,
        time: u64,
        items: &mut Vec<T>,
        give: impl FnOnce(std::vec::Drain<'_, T>),
    ) {
        if !self.holding() {
            give(items.drain(..));
            return;
        }
        // The restore epochs rebuild the checkpoint's state: no change.
        if time >= RESTORE_EPOCHS {
            for item in items.iter() {
                let user = item.user();
                if !self.changed.contains(user) {
                    self.changed.insert(user.clone());
                }
            }
        }
        items.clear();
    }

    /// Call after each activation. Once the topology has recovered, `write`
    /// gets the held capability, the store and the users to write whole,
    /// and the gate opens; until then the capability follows the inputs.
    pub fn step(
        &mut self,
        status: &Status,
        frontiers: &[MutableAntichain<u64>],
        write: impl FnOnce(&Capability<u64>, &dyn Store, Only<'_>),
    ) {
        let Some((cap, store)) = self.held.as_mut() else {
            return;
        };
        if status.recovered() {
            let only = stale_since_checkpoint(status, store.as_ref(), &self.changed);
            write(cap, store.as_ref(), only.as_ref());
            status.recovery_emitted(*cap.time());
            self.held = None;
            self.changed = HashSet::new();
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

/// After a resume from a checkpoint whose state the store holds: the users
/// written since it and those `changed` since; `None` (every user) after a
/// full replay, or when the store cannot say whom it wrote.
fn stale_since_checkpoint(
    status: &Status,
    store: &dyn Store,
    changed: &HashSet<TypedId>,
) -> Option<HashSet<TypedId>> {
    let since = status.resumed_store_since()?;
    match store.written_since(since) {
        Ok(Some(mut written)) => {
            let stale_before = written.len();
            written.extend(changed.iter().cloned());
            tracing::info!(
                written_since_checkpoint = stale_before,
                changed_since = changed.len(),
                users = written.len(),
                "recovery rewrites only the users written or changed since the checkpoint"
            );
            Some(written)
        }
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(%error, "cannot read which users were written; rewriting every user");
            None
        }
    }
}

/// Whether worker `index` of `peers` owns `user`.
fn owns(user: &TypedId, index: usize, peers: usize) -> bool {
    route(user) % peers as u64 == index as u64
}

/// Hands `whole` each user a recovery on worker `index` of `peers` writes
/// whole: with `only`, those of them this worker owns; otherwise each user
/// it `holds` state for, then each user the store lists (`stored`) that it
/// owns but no longer `has`, whose stored state is stale (`whole` resets
/// it). A store that cannot list its users is logged, and their stale
/// state stays until touched.
pub fn each_recovered_user<'a>(
    only: Only<'_>,
    holds: impl IntoIterator<Item = &'a TypedId>,
    stored: impl FnOnce() -> Result<Vec<TypedId>>,
    has: impl Fn(&TypedId) -> bool,
    (index, peers): (usize, usize),
    mut whole: impl FnMut(&TypedId),
) {
    if let Some(users) = only {
        users
            .iter()
            .filter(|user| owns(user, index, peers))
            .for_each(whole);
        return;
    }
    holds.into_iter().for_each(&mut whole);
    let stored = stored().unwrap_or_else(|error| {
        tracing::warn!(%error, "cannot list stored users; stale state stays until touched");
        Vec::new()
    });
    stored
        .iter()
        .filter(|user| owns(user, index, peers) && !has(user))
        .for_each(whole);
}
