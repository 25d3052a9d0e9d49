//! Interests: who follows (and who blocks) which people and things, resolved
//! last-writer-wins per (user, typed id, relation).

use std::collections::HashMap;

use differential_dataflow::AsCollection;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use std::sync::Arc;

use crate::bolt::{EpochStash, Pool, Seeded};
use crate::checkpoint::{Checkpoints, Snapshots};
use crate::event::{InterestOp, Millis, Relation, TypedId};
use crate::grouping::route;

/// What the interests bolt consumes, grouped by user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InterestEvent {
    /// `user` exists (acted or followed): with `follow_self`, they follow themselves.
    Seen(TypedId),
    /// A follow, unfollow, block or unblock.
    Change {
        /// The event's time (milliseconds since the Unix epoch).
        time: Millis,
        /// The user whose interest changes.
        user: TypedId,
        /// Of whom or what (the blocked id of a block or unblock).
        interest: TypedId,
        /// Follow, unfollow, block or unblock.
        op: InterestOp,
    },
}

/// A relation in force: `user` follows (or blocks) `of`. The interests
/// bolt's output is the collection of these.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Edge {
    /// Followed or blocked.
    pub of: TypedId,
    /// Who follows or blocks it.
    pub user: TypedId,
    /// Which of the two.
    pub relation: Relation,
}

impl Edge {
    /// `user` follows `of`.
    pub fn follows(of: TypedId, user: TypedId) -> Edge {
        Edge {
            of,
            user,
            relation: Relation::Follows,
        }
    }
}

impl InterestEvent {
    fn user(&self) -> &TypedId {
        match self {
            InterestEvent::Seen(user) | InterestEvent::Change { user, .. } => user,
        }
    }
}

/// Resolves follow/unfollow and block/unblock events into the edges in force.
pub trait ResolveInterests<'scope> {
    /// The collection of [`Edge`]s. For each (user, typed id, relation)
    /// the event with the largest `(time, op)` wins, where unfollow beats
    /// follow and block beats unblock at equal times, so neither delivery
    /// order nor replays change the result. With `follow_self`, each user seen also follows
    /// themselves. With `checkpoints`, the state is saved at each
    /// checkpoint boundary as an [`InterestsPart`].
    fn resolve_interests(
        self,
        follow_self: bool,
        checkpoints: Option<Arc<Checkpoints>>,
    ) -> VecCollection<'scope, u64, Edge, isize>;
}

/// The interests bolt's part of a checkpoint on one worker: each user it
/// has seen, with the winning `(time, op)` of each of their pairs.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct InterestsPart {
    /// Per user, `(typed id, time, op)` of every pair ever followed,
    /// unfollowed, blocked or unblocked (a pair with both relations twice).
    #[serde(deserialize_with = "pooled_users")]
    pub users: Vec<(TypedId, Vec<SavedPair>)>,
}

/// Decodes [`InterestsPart::users`] with one handle per typed id: a part
/// names each followed id once per follower, and shared handles let the
/// heads bolt intern an edge's ids by address rather than by their text.
fn pooled_users<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<(TypedId, Vec<SavedPair>)>, D::Error> {
    let mut users: Vec<(TypedId, Vec<SavedPair>)> = crate::checkpoint::presized(deserializer)?;
    let mut pool = Pool::new(TypedId::is_shared);
    for (user, pairs) in &mut users {
        pool.share(user);
        for (interest, _, _) in pairs {
            pool.share(interest);
        }
    }
    Ok(users)
}

/// One (user, interest) pair's winning event: `(interest, time, op)`.
pub type SavedPair = (TypedId, Millis, InterestOp);

impl InterestsPart {
    /// The events that rebuild this state: each user seen, then each pair's
    /// winning follow or unfollow.
    pub fn events(self) -> impl Iterator<Item = InterestEvent> {
        self.users.into_iter().flat_map(|(user, pairs)| {
            let seen = InterestEvent::Seen(user.clone());
            std::iter::once(seen).chain(pairs.into_iter().map(move |(interest, time, op)| {
                InterestEvent::Change {
                    time,
                    user: user.clone(),
                    interest,
                    op,
                }
            }))
        })
    }
}

/// Each user's pairs, by interest and relation, with the winning time and op.
type Pairs = HashMap<(TypedId, Relation), (Millis, InterestOp), Seeded>;

type Users = HashMap<TypedId, Pairs, Seeded>;

fn save(snapshots: &Snapshots, boundaries: &[u64], users: &Users) {
    if !boundaries.is_empty() {
        snapshots.save(boundaries, users.len() as u64, part(users));
    }
}

fn part(users: &Users) -> InterestsPart {
    InterestsPart {
        users: users
            .iter()
            .map(|(user, pairs)| {
                let pairs = pairs
                    .iter()
                    .map(|((i, _), (t, op))| (i.clone(), *t, *op))
                    .collect();
                (user.clone(), pairs)
            })
            .collect(),
    }
}

impl<'scope> ResolveInterests<'scope> for StreamVec<'scope, u64, InterestEvent> {
    fn resolve_interests(
        self,
        follow_self: bool,
        checkpoints: Option<Arc<Checkpoints>>,
    ) -> VecCollection<'scope, u64, Edge, isize> {
        let mut snapshots = Snapshots::new(checkpoints, "interests", self.scope().index());
        let pact = Exchange::new(|e: &InterestEvent| route(e.user()));
        self.unary_frontier(pact, "ResolveInterests", move |_cap, _info| {
            let mut stash = EpochStash::new(1);
            // user -> interest -> the winning (time, op) so far
            let mut users = Users::default();
            move |(input, frontier), output| {
                input.for_each(|cap, data| stash.stash(&cap, data.drain(..)));
                for (caps, events) in stash.take_ready(&[frontier]) {
                    let time = *caps[0].time();
                    let due = snapshots.due(time);
                    save(&snapshots, &due, &users);
                    let mut session = output.session(&caps[0]);
                    for event in events {
                        let user = event.user().clone();
                        let edges = users.entry(user.clone()).or_insert_with(|| {
                            if follow_self {
                                session.give((Edge::follows(user.clone(), user.clone()), time, 1));
                            }
                            Pairs::default()
                        });
                        let InterestEvent::Change {
                            time: at,
                            interest,
                            op,
                            ..
                        } = event
                        else {
                            continue;
                        };
                        let relation = op.relation();
                        let pair = (interest, relation);
                        let current = edges.get(&pair).copied();
                        if current.is_none_or(|winner| (at, op) > winner) {
                            let was = current.is_some_and(|(_, op)| op.holds());
                            let is = op.holds();
                            edges.insert(pair.clone(), (at, op));
                            if was != is {
                                let edge = Edge {
                                    of: pair.0,
                                    user: user.clone(),
                                    relation,
                                };
                                session.give((edge, time, if is { 1 } else { -1 }));
                            }
                        }
                    }
                }
                let frontier = frontier.frontier().first().copied();
                if let Some(frontier) = frontier {
                    let due = snapshots.due(frontier);
                    save(&snapshots, &due, &users);
                }
            }
        })
        .as_collection()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoded part equals the saved one, and each typed id it names has
    /// one handle, however many users name it.
    #[test]
    fn a_decoded_part_shares_one_handle_per_typed_id() {
        let id = |s: &str| TypedId::parse(s).unwrap();
        let part = InterestsPart {
            users: vec![
                (
                    id("user:ann"),
                    vec![(id("user:rob"), 1, InterestOp::Follow)],
                ),
                (
                    id("user:rob"),
                    vec![
                        (id("user:ann"), 2, InterestOp::Follow),
                        (id("thing:t"), 3, InterestOp::Block),
                    ],
                ),
                (
                    id("user:cid"),
                    vec![(id("thing:t"), 4, InterestOp::Unfollow)],
                ),
            ],
        };
        let bytes = bincode::serialize(&part).unwrap();
        let back: InterestsPart = bincode::deserialize(&bytes).unwrap();
        assert_eq!(back.users, part.users);
        let users = &back.users;
        let address = |typed: &TypedId| typed.address();
        assert_eq!(address(&users[0].1[0].0), address(&users[1].0), "user:rob");
        assert_eq!(address(&users[1].1[0].0), address(&users[0].0), "user:ann");
        assert_eq!(
            address(&users[1].1[1].0),
            address(&users[2].1[0].0),
            "thing:t"
        );
    }
}
