//! Fan-out on write: each story reaches every user interested in its typed id.

use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::VecCollection;

use crate::event::TypedId;
use crate::feed::Story;

/// Retained stories arranged by the typed id they are about. Shared with the
/// DRPC rebuild, which reads the same arrangement instead of a second copy.
pub type StoriesTrace = TraceAgent<ValSpine<TypedId, Story, u64, isize>>;
/// Interest edges arranged by interest: `interest -> user`.
pub type FollowersTrace = TraceAgent<ValSpine<TypedId, TypedId, u64, isize>>;

/// Joins stories with the users interested in them.
pub trait Fanout<'scope> {
    /// `(user, entry)` with multiplicity the number of the user's interests
    /// that the story is about: a follow brings an interest's past stories
    /// (backfill), an unfollow or delete retracts them, all by the join.
    fn fanout(
        self,
        followers: Arranged<'scope, FollowersTrace>,
    ) -> VecCollection<'scope, u64, (TypedId, Story), isize>;
}

impl<'scope> Fanout<'scope> for Arranged<'scope, StoriesTrace> {
    fn fanout(
        self,
        followers: Arranged<'scope, FollowersTrace>,
    ) -> VecCollection<'scope, u64, (TypedId, Story), isize> {
        self.join_core(followers, |_about, entry, user| {
            Some((user.clone(), entry.clone()))
        })
    }
}
