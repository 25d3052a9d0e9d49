//! An epoch's deliveries grouped by user: each user's share of the epoch's
//! kept and forgotten stories in one run, leaves first, then joins newest
//! first.
//!
//! A catch-up epoch brings a user thousands of joins, of which only the
//! newest can enter a bounded head or digest: newest first, a head stops at
//! its first join below the candidates, and the digests know early which
//! groups can no longer reach theirs. Grouped, a user's state is looked up
//! once per run and stays in cache while the run is applied. The grouping
//! is a stable counting sort over the users reached ([`Reach`]): two passes
//! over the followers, and buffers kept between epochs.

use crate::bolt::fanout::{Entry, Fanout, Reach, Tid};

/// The grouping's buffers, kept between epochs: a catch-up's are large,
/// and fresh pages each epoch cost more than the changes themselves (until
/// epochs get small: see `release_unused`).
#[derive(Default)]
pub struct UserRuns {
    reach: Reach,
    /// The epoch's changes, leaves then joins newest first.
    order: Vec<(Entry, bool)>,
    /// Per user, where their changes start in `by_user`.
    starts: Vec<usize>,
    /// The changes (indexes into `order`), grouped by user.
    by_user: Vec<u32>,
    /// One user's run, as handed out.
    run: Vec<(Entry, bool)>,
}

impl UserRuns {
    /// Calls `each_run` once for every user the epoch's `changed` stories
    /// reach (each entry with its diff, removals first, each sign oldest
    /// first), with that user's run: `(entry, joins)`, its leaves oldest
    /// first, then its joins newest first. Users come in [`Tid`] order.
    pub fn for_each(
        &mut self,
        changed: &[(Entry, isize)],
        fanout: &Fanout,
        mut each_run: impl FnMut(Tid, &[(Entry, bool)]),
    ) {
        let UserRuns {
            reach,
            order,
            starts,
            by_user,
            run,
        } = self;
        let leaves = changed.iter().filter(|(_, diff)| *diff < 0);
        let joins = changed.iter().rev().filter(|(_, diff)| *diff > 0);
        order.clear();
        order.extend(leaves.chain(joins).map(|(entry, diff)| (*entry, *diff > 0)));
        // Two passes over the users reached: count per user, then place.
        let users = fanout.typed_ids.len();
        starts.clear();
        starts.resize(users + 1, 0);
        for (entry, _) in order.iter() {
            reach.each(fanout, *entry, |user| starts[user as usize + 1] += 1);
        }
        for user in 0..users {
            starts[user + 1] += starts[user];
        }
        by_user.clear();
        by_user.resize(starts[users], 0);
        let mut next = starts.clone();
        for (at, (entry, _)) in order.iter().enumerate() {
            let at = u32::try_from(at).expect("fewer than 2^32 stories an epoch");
            reach.each(fanout, *entry, |user| {
                by_user[next[user as usize]] = at;
                next[user as usize] += 1;
            });
        }
        for (user, span) in starts.windows(2).enumerate() {
            if span[0] < span[1] {
                run.clear();
                run.extend(
                    by_user[span[0]..span[1]]
                        .iter()
                        .map(|at| order[*at as usize]),
                );
                each_run(user as Tid, run);
            }
        }
        crate::bolt::release_unused(order, order.len());
        crate::bolt::release_unused(by_user, by_user.len());
        crate::bolt::release_unused(run, run.len());
    }
}
