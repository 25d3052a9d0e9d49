//! An epoch's deliveries grouped by user: each user's share of the epoch's
//! kept and forgotten stories in one run, leaves first, then joins newest
//! first.
//!
//! A catch-up epoch brings a user thousands of joins, of which only the
//! newest can enter a bounded head or digest: newest first, a head stops at
//! its first join below the candidates, and the digests know early which
//! groups can no longer reach theirs. Grouped, a user's state is looked up
//! once per run and stays in cache while the run is applied. The grouping
//! is a stable counting sort over the users reached ([`Reach`]): one walk
//! of the followers, whose users are kept in order, then a pass over those
//! to place them; buffers kept between epochs.

use crate::bolt::fanout::{Entry, Fanout, Reach, Tid};

/// The grouping's buffers, kept between epochs: a catch-up's are large,
/// and fresh pages each epoch cost more than the changes themselves (until
/// epochs get small: see `release_unused`).
#[derive(Default)]
pub struct UserRuns {
    reach: Reach,
    /// The epoch's changes, leaves then joins newest first.
    order: Vec<(Entry, bool)>,
    /// The users each change reaches, change after change: the followers
    /// are walked once (the walk dedups a story's users), not again to
    /// place them.
    reached: Vec<Tid>,
    /// Where each change's users end in `reached`.
    ends: Vec<usize>,
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
            reached,
            ends,
            starts,
            by_user,
            run,
        } = self;
        let leaves = changed.iter().filter(|(_, diff)| *diff < 0);
        let joins = changed.iter().rev().filter(|(_, diff)| *diff > 0);
        order.clear();
        order.extend(leaves.chain(joins).map(|(entry, diff)| (*entry, *diff > 0)));
        // One walk of the users reached, counted per user as they are kept;
        // then each placed from the kept list.
        let users = fanout.typed_ids.len();
        starts.clear();
        starts.resize(users + 1, 0);
        reached.clear();
        ends.clear();
        for (entry, _) in order.iter() {
            reach.each(fanout, *entry, |user| {
                reached.push(user);
                starts[user as usize + 1] += 1;
            });
            ends.push(reached.len());
        }
        for user in 0..users {
            starts[user + 1] += starts[user];
        }
        by_user.clear();
        by_user.resize(starts[users], 0);
        let mut next = starts.clone();
        let mut begin = 0;
        for (at, &end) in ends.iter().enumerate() {
            let at = u32::try_from(at).expect("fewer than 2^32 stories an epoch");
            for &user in &reached[begin..end] {
                by_user[next[user as usize]] = at;
                next[user as usize] += 1;
            }
            begin = end;
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
        crate::bolt::release_unused(reached, reached.len());
        crate::bolt::release_unused(ends, ends.len());
        crate::bolt::release_unused(by_user, by_user.len());
        crate::bolt::release_unused(run, run.len());
    }
}
