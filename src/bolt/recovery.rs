//! Recovery on a store that outlives the process (Redis): after a restart a
//! stateful bolt writes nothing until the topology has caught up (the old
//! state keeps serving), then writes the state of every user whose stored
//! state may be stale. After a full replay that is every user. After a
//! resume from a checkpoint the store already holds the checkpoint's
//! state, except for the users the store records as written since the
//! checkpoint ([`Store::written_since`]: the run before wrote epochs
//! after it): only they are rewritten whole. Every other user's stored
//! state is the checkpoint's, so the changes the replay since made to it
//! are kept while held and written as they are (a few entries, not the
//! user's whole head), up to [`HELD_CHANGES`]. A user with more changes
//! than a whole rewrite writes (a head's size), or whose changes came past
//! that bound, is rewritten whole instead. The feed-head and digest bolts
//! share this gate.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use timely::dataflow::operators::Capability;
use timely::progress::frontier::MutableAntichain;

use crate::checkpoint::RESTORE_EPOCHS;
use crate::error::Result;
use crate::event::TypedId;
use crate::grouping::route;
use crate::status::Status;
use crate::store::Store;

/// Changes a resume keeps while held, to write as they are once recovered.
pub const HELD_CHANGES: usize = 1 << 20;

/// Holds an operator's output back while the topology recovers.
pub struct RecoveryGate<T> {
    /// The capability held at the input frontier, to write the recovered
    /// state with when recovery ends, and the store to recover into.
    held: Option<(Capability<u64>, Arc<dyn Store>)>,
    /// A resume from a checkpoint the store holds: changes are kept.
    keeps_changes: bool,
    /// The changes in epochs after the restore epochs, while held, in order.
    kept: Vec<T>,
    /// Per user with a change while held, the changes kept; past
    /// `whole_after` (or [`HELD_CHANGES`] in all) the user is rewritten whole.
    changed: HashMap<TypedId, usize>,
    whole_after: usize,
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

impl<T: UserChange> RecoveryGate<T> {
    /// A gate that holds `cap` when there is a store to recover into, and
    /// is open at once otherwise. A user whose held changes number more
    /// than `whole_after` (about what writing the user whole takes) is
    /// written whole.
    pub fn new(
        cap: Option<Capability<u64>>,
        recover_into: Option<Arc<dyn Store>>,
        status: &Status,
        whole_after: usize,
    ) -> RecoveryGate<T> {
        RecoveryGate {
            held: cap.zip(recover_into),
            keeps_changes: status.resumed_store_since().is_some(),
            kept: Vec::new(),
            changed: HashMap::new(),
            whole_after,
        }
    }

    /// Whether output is held back (the state is written whole later).
    pub fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// Hands epoch `time`'s `items` to `give`, or, while holding, notes the
    /// users they change and drops them; `items` is left empty.
    pub fn pass(
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
            for item in items.drain(..) {
                let kept = match self.changed.get_mut(item.user()) {
                    Some(kept) => kept,
                    None => self.changed.entry(item.user().clone()).or_default(),
                };
                if *kept <= self.whole_after && self.keeps_changes && self.kept.len() < HELD_CHANGES
                {
                    *kept += 1;
                    self.kept.push(item);
                } else {
                    *kept = usize::MAX;
                }
            }
        }
        items.clear();
    }

    /// Call after each activation. Once the topology has recovered, `write`
    /// gets the held capability, the store, the users to write whole and
    /// `out` holding the kept changes of the others (to send with them),
    /// and the gate opens; until then the capability follows the inputs.
    pub fn step(
        &mut self,
        status: &Status,
        frontiers: &[MutableAntichain<u64>],
        out: &mut Vec<T>,
        write: impl FnOnce(&Capability<u64>, &dyn Store, Only<'_>, &mut Vec<T>),
    ) {
        let Some((cap, store)) = self.held.as_mut() else {
            return;
        };
        if status.recovered() {
            let whole_after = self.whole_after;
            let changed = std::mem::take(&mut self.changed)
                .into_iter()
                .filter_map(|(user, kept)| (kept > whole_after).then_some(user));
            let mut kept = std::mem::take(&mut self.kept);
            let only = stale_since_checkpoint(status, store.as_ref(), changed, kept.len());
            match &only {
                Some(whole) => kept.retain(|change| !whole.contains(change.user())),
                None => kept.clear(),
            }
            out.append(&mut kept);
            write(cap, store.as_ref(), only.as_ref(), out);
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

/// After a resume from a checkpoint whose state the store holds: the users
/// written since it and those `changed` too often to keep; `None`
/// (every user) after a full replay, or when the store cannot say whom it
/// wrote.
fn stale_since_checkpoint(
    status: &Status,
    store: &dyn Store,
    changed: impl Iterator<Item = TypedId>,
    kept: usize,
) -> Option<HashSet<TypedId>> {
    let since = status.resumed_store_since()?;
    match store.written_since(since) {
        Ok(Some(mut written)) => {
            let stale_before = written.len();
            written.extend(changed);
            tracing::info!(
                written_since_checkpoint = stale_before,
                written_whole = written.len(),
                changes_kept = kept,
                "recovery rewrites only the users written since the checkpoint, and writes the changes since"
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
