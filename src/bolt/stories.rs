//! Stories: the retained, de-duplicated, undeleted activities, as stories
//! about each typed id they name.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arcstr::ArcStr;
use differential_dataflow::{AsCollection, VecCollection};
use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::StreamVec;

use crate::bolt::{EpochStash, Pool, Seeded};
use crate::checkpoint::{presize, Checkpoints, Presized, SharedIds, Snapshots};
use crate::event::{Activity, Millis, TypedId};
use crate::feed::{ById, Story};
use crate::grouping::route;

/// What the stories bolt consumes, grouped by activity id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoryEvent {
    /// An activity (possibly a duplicate).
    Activity(Activity),
    /// The activity with this id is withdrawn, whenever it arrives.
    Delete(Arc<str>),
    /// A worker's saved stories in one piece, for that worker: a resume on
    /// the worker count that saved them loads each part where it was
    /// saved, in bulk, instead of routing its activities one by one.
    Restored(Box<Restored>),
}

impl StoryEvent {
    /// The worker this event goes to, of however many: by activity id
    /// (see [`route`]), a restored part to its worker.
    fn route(&self) -> u64 {
        match self {
            StoryEvent::Activity(a) => route(&*a.id),
            StoryEvent::Delete(id) => route(&**id),
            StoryEvent::Restored(restored) => restored.worker as u64,
        }
    }
}

/// One worker's [`LoadedStories`], as [`StoryEvent::Restored`] carries it
/// to the worker that saved it. The same fields, kept apart: this one
/// crosses processes in serde's own form, while a [`LoadedStories`] only
/// decodes a part's form (typed ids as places in the part's table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    /// The worker it goes to (the one that saved it).
    pub worker: usize,
    /// The newest event time the part had seen.
    pub newest: Option<Millis>,
    /// Every typed id the activities name, once: they hold these handles.
    pub typed_ids: Vec<TypedId>,
    /// The retained activities, oldest first, none deleted, each once:
    /// each in its own handle already, as the bolt keeps it.
    pub activities: Vec<Arc<Activity>>,
    /// Deleted ids.
    pub deleted: Vec<Arc<str>>,
}

/// A change to the stored activities that feeds refer to.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum ActivityChange {
    /// Store this activity (it is now retained).
    Put(Arc<Activity>),
    /// Forget this activity (deleted or past retention).
    Remove(Arc<str>),
}

/// Keeps the set of retained activities.
pub trait KeepStories<'scope> {
    /// Returns the stories, `+1` when an activity becomes retained and `-1`
    /// when it is deleted or expires; the stories a resume restores, as one
    /// [`RestoredStories`] batch per worker instead (a resume's hundreds of
    /// thousands would otherwise cross the channels one by one); and the
    /// activity writes for the sink. `horizon` carries each
    /// worker's newest event time per epoch, broadcast to all workers; a story
    /// older than the newest time seen minus `retention` is dropped. With
    /// `checkpoints`, the state is saved at each checkpoint boundary as a
    /// [`StoriesPart`]; with `store_holds_restored` (a store that outlives
    /// the process), the activities a resume restores are not written
    /// again: the store holds every activity the checkpoint retains.
    fn keep_stories(
        self,
        horizon: StreamVec<'scope, u64, Millis>,
        retention: Duration,
        checkpoints: Option<Arc<Checkpoints>>,
        store_holds_restored: bool,
    ) -> (
        Stories<'scope>,
        StreamVec<'scope, u64, RestoredStories>,
        StreamVec<'scope, u64, ActivityChange>,
    );
}

/// The stories one worker's stories bolt restored from a checkpoint, oldest
/// first, each `+1` at `time` (a resume's first epoch): one handle for all
/// of them, which every worker's fan-out reads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RestoredStories {
    /// The epoch they are restored in.
    pub time: u64,
    /// The stories, oldest first (feed order), each once.
    pub stories: Arc<Vec<Story>>,
}

impl RestoredStories {
    /// The stories in `batch` (emptied), restored at `time`; none if empty.
    fn take(time: u64, batch: &mut Vec<Story>) -> Option<RestoredStories> {
        (!batch.is_empty()).then(|| RestoredStories {
            time,
            stories: Arc::new(std::mem::take(batch)),
        })
    }
}

/// `restored` as story updates, one per story: for bolts that key stories
/// their own way (the notification feed, by target).
pub fn restored_as_stories<'scope>(
    restored: &StreamVec<'scope, u64, RestoredStories>,
) -> Stories<'scope> {
    use timely::dataflow::operators::vec::Map;
    restored
        .clone()
        .flat_map(|batch| {
            let time = batch.time;
            Arc::unwrap_or_clone(batch.stories)
                .into_iter()
                .map(move |story| (story, time, 1))
        })
        .as_collection()
}

/// Retained stories: `+1` when an activity becomes retained and `-1` when it
/// is deleted or expires. A story is about each typed id its activity names
/// ([`Activity::story_ids`]).
pub type Stories<'scope> = VecCollection<'scope, u64, Story, isize>;

enum Input {
    Event(StoryEvent),
    Newest(Millis),
}

/// The operator's state on one worker. Every index shares the activity's
/// one id allocation.
#[derive(Default)]
struct Retained {
    present: HashSet<ById, Seeded>,
    /// Present activities in feed order, oldest first, for expiry.
    by_time: BTreeSet<Story>,
    /// Deleted ids, kept so that a late or replayed copy never shows.
    deleted: HashSet<Arc<str>, Seeded>,
    newest: Option<Millis>,
    pools: Pools,
}

/// The pools of the handles activities hold.
struct Pools {
    typed_ids: Pool<TypedId>,
    verbs: Pool<ArcStr>,
}

impl Default for Pools {
    fn default() -> Self {
        Pools {
            typed_ids: Pool::new(TypedId::is_shared),
            verbs: Pool::new(|verb| ArcStr::strong_count(verb).is_none_or(|count| count > 1)),
        }
    }
}

impl Pools {
    fn share_all(&mut self, activity: &mut Activity) {
        self.typed_ids.share(&mut activity.actor);
        self.typed_ids.share(&mut activity.object);
        if let Some(target) = &mut activity.target {
            self.typed_ids.share(target);
        }
        self.verbs.share(&mut activity.verb);
    }
}

type StoryUpdate = (Story, u64, isize);

/// The stories bolt's part of a checkpoint on one worker: what it needs to
/// resume, as events a resume sends it again. A resume decodes it as a
/// [`LoadedStories`].
#[derive(Debug, Default, Serialize)]
pub struct StoriesPart {
    /// The newest event time seen (the retention horizon's base).
    pub newest: Option<Millis>,
    /// The typed ids the activities name, each saved once.
    pub typed_ids: Vec<TypedId>,
    /// The retained activities, oldest first.
    pub activities: Vec<SavedActivity>,
    /// Deleted ids, so that a late or replayed copy never shows.
    pub deleted: Vec<Arc<str>>,
}

/// A retained activity in a [`StoriesPart`]: its typed ids are places in
/// the part's table, so a load shares one handle per typed id.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedActivity {
    #[serde(deserialize_with = "crate::checkpoint::shared_str")]
    id: Arc<str>,
    time: Millis,
    actor: u32,
    #[serde(deserialize_with = "crate::checkpoint::pooled_verb")]
    verb: ArcStr,
    object: u32,
    target: Option<u32>,
    extra: Option<Box<str>>,
}

impl SavedActivity {
    /// The activity, its typed ids taken from `table`; an error names a
    /// place the table does not hold (a corrupt part).
    fn resolve(self, table: &[TypedId]) -> Result<Activity, String> {
        let typed = |at: u32| {
            table
                .get(at as usize)
                .cloned()
                .ok_or_else(|| format!("a stories part names typed id {at} of {}", table.len()))
        };
        Ok(Activity {
            id: self.id,
            time: self.time,
            actor: typed(self.actor)?,
            verb: self.verb,
            object: typed(self.object)?,
            target: self.target.map(typed).transpose()?,
            extra: self.extra,
        })
    }
}

impl StoriesPart {
    /// The part of a worker that has seen events up to `newest`, retains
    /// `activities` (oldest first) and has `deleted` these ids.
    pub fn of<'a>(
        newest: Option<Millis>,
        activities: impl Iterator<Item = &'a Activity>,
        deleted: impl Iterator<Item = Arc<str>>,
    ) -> StoriesPart {
        // The bolt shares one handle per typed id (its pool), so the table
        // is keyed by address (the borrowed activities keep every address
        // in use); a handle not shared is only saved once per copy.
        let mut places: HashMap<usize, u32, foldhash::fast::FixedState> = HashMap::default();
        let mut typed_ids = Vec::new();
        let mut place = |typed: &TypedId| {
            *places.entry(typed.address()).or_insert_with(|| {
                typed_ids.push(typed.clone());
                (typed_ids.len() - 1) as u32
            })
        };
        let activities = activities
            .map(|a| SavedActivity {
                id: a.id.clone(),
                time: a.time,
                actor: place(&a.actor),
                verb: a.verb.clone(),
                object: place(&a.object),
                target: a.target.as_ref().map(&mut place),
                extra: a.extra.clone(),
            })
            .collect();
        StoriesPart {
            newest,
            typed_ids,
            activities,
            deleted: deleted.collect(),
        }
    }

    /// Activities and deleted ids in it.
    pub fn records(&self) -> u64 {
        (self.activities.len() + self.deleted.len()) as u64
    }
}

/// A [`StoriesPart`] as a resume decodes it (the same bytes): each
/// activity goes straight from the bytes into the handle the bolt keeps,
/// with no list of saved activities between (340,000 on a worker of the
/// restart bench, all on pages touched for the first time).
#[derive(Debug)]
pub struct LoadedStories {
    /// The newest event time the part had seen.
    pub newest: Option<Millis>,
    /// Every typed id the activities name, once: they hold these handles.
    pub typed_ids: Vec<TypedId>,
    /// The retained activities, oldest first.
    pub activities: Vec<Arc<Activity>>,
    /// Deleted ids.
    pub deleted: Vec<Arc<str>>,
}

impl LoadedStories {
    /// Activities and deleted ids in it.
    pub fn records(&self) -> u64 {
        (self.activities.len() + self.deleted.len()) as u64
    }

    /// The part as worker `worker` restores it in one piece.
    pub fn into_restored(self, worker: usize) -> Restored {
        Restored {
            worker,
            newest: self.newest,
            typed_ids: self.typed_ids,
            activities: self.activities,
            deleted: self.deleted,
        }
    }

    /// Takes out the retained activities, oldest first (the typed-id table
    /// stays), for a resume that routes them one by one.
    pub fn take_activities(&mut self) -> Vec<Activity> {
        std::mem::take(&mut self.activities)
            .into_iter()
            .map(Arc::unwrap_or_clone)
            .collect()
    }
}

impl<'de> Deserialize<'de> for LoadedStories {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const FIELDS: &[&str] = &["newest", "typed_ids", "activities", "deleted"];
        deserializer.deserialize_struct("StoriesPart", FIELDS, LoadedVisitor)
    }
}

/// Decodes a [`StoriesPart`]'s fields in order (as bincode writes a
/// struct), the activities against the typed-id table decoded before them.
struct LoadedVisitor;

impl<'de> Visitor<'de> for LoadedVisitor {
    type Value = LoadedStories;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a stories part")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LoadedStories, A::Error> {
        let missing = |at| A::Error::invalid_length(at, &"a stories part of 4 fields");
        let newest = seq.next_element()?.ok_or_else(|| missing(0))?;
        let Presized(typed_ids) = seq.next_element()?.ok_or_else(|| missing(1))?;
        let mut activities: Vec<Arc<Activity>> = seq
            .next_element_seed(Activities { table: &typed_ids })?
            .ok_or_else(|| missing(2))?;
        let SharedIds(deleted) = seq.next_element()?.ok_or_else(|| missing(3))?;
        // Oldest first: the bolts' time indexes then only append.
        if !activities.is_sorted_by_key(|a| a.time) {
            activities.sort_unstable_by_key(|a| a.time);
        }
        Ok(LoadedStories {
            newest,
            typed_ids,
            activities,
            deleted,
        })
    }
}

/// Decodes a part's saved activities, each resolved against `table` and
/// put in its handle as it is read.
struct Activities<'a> {
    table: &'a [TypedId],
}

impl<'de> DeserializeSeed<'de> for Activities<'_> {
    type Value = Vec<Arc<Activity>>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Activities<'_> {
    type Value = Vec<Arc<Activity>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of saved activities")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut activities = Vec::with_capacity(presize(seq.size_hint()));
        while let Some(saved) = seq.next_element::<SavedActivity>()? {
            let activity = saved.resolve(self.table).map_err(A::Error::custom)?;
            activities.push(Arc::new(activity));
        }
        Ok(activities)
    }
}

impl Retained {
    fn part(&self) -> StoriesPart {
        StoriesPart::of(
            self.newest,
            self.by_time.iter().map(|Story(a)| &**a),
            self.deleted.iter().cloned(),
        )
    }

    /// Loads a restored part: into an empty state in bulk (a resume's
    /// first epoch), its stories appended to `batch`, else (never
    /// expected) as events, appended to `activities` for the epoch's usual
    /// path.
    fn restore(
        &mut self,
        restored: Restored,
        time: u64,
        (stories, batch): (&mut Vec<StoryUpdate>, &mut Vec<Story>),
        writes: &mut Vec<ActivityChange>,
        activities: &mut Vec<Activity>,
    ) {
        if let Some(t) = restored.newest {
            self.newest = Some(self.newest.map_or(t, |n| n.max(t)));
        }
        if !self.present.is_empty() || !self.deleted.is_empty() {
            for id in restored.deleted {
                self.delete(id, time, stories, writes);
            }
            activities.extend(restored.activities.into_iter().map(Arc::unwrap_or_clone));
            return;
        }
        // As `delete` on an empty state: the store may hold a copy.
        writes.extend(restored.deleted.iter().cloned().map(ActivityChange::Remove));
        self.deleted.extend(restored.deleted);
        // The activities hold the table's handles: pooled once each, not
        // looked up per activity.
        for mut typed in restored.typed_ids {
            self.pools.typed_ids.share(&mut typed);
        }
        self.present.reserve(restored.activities.len());
        writes.reserve(restored.activities.len());
        let mut by_time = Vec::with_capacity(restored.activities.len());
        for mut activity in restored.activities {
            if let Some(only) = Arc::get_mut(&mut activity) {
                self.pools.verbs.share(&mut only.verb);
            }
            if !self.present.insert(ById(activity.clone())) {
                continue; // a corrupt part: each id once
            }
            by_time.push(Story(activity.clone()));
            writes.push(ActivityChange::Put(activity));
        }
        // Built in one pass from sorted stories, not inserted one by one.
        self.by_time = by_time.into_iter().collect();
        batch.extend(self.by_time.iter().cloned());
    }

    fn stories(activity: &Arc<Activity>, time: u64, diff: isize, out: &mut Vec<StoryUpdate>) {
        out.push((Story(activity.clone()), time, diff));
    }

    fn remove(
        &mut self,
        id: &str,
        time: u64,
        stories: &mut Vec<StoryUpdate>,
        writes: &mut Vec<ActivityChange>,
    ) -> bool {
        let Some(ById(activity)) = self.present.take(id) else {
            return false;
        };
        self.by_time.remove(&Story(activity.clone()));
        Self::stories(&activity, time, -1, stories);
        writes.push(ActivityChange::Remove(activity.id.clone()));
        true
    }

    /// Withdraws activity `id`, now and whenever it arrives.
    fn delete(
        &mut self,
        id: Arc<str>,
        time: u64,
        stories: &mut Vec<StoryUpdate>,
        writes: &mut Vec<ActivityChange>,
    ) {
        let removed = self.remove(&id, time, stories, writes);
        if self.deleted.insert(id.clone()) && !removed {
            // Not kept here, but a run that crashed may have stored it
            // before its delete was read: a deleted activity's text must
            // not outlive it in the store.
            writes.push(ActivityChange::Remove(id));
        }
    }

    /// Applies one complete epoch: newest times first, then deletes (so that
    /// a delete wins whatever the order within the epoch), then activities,
    /// then expiry.
    fn epoch(
        &mut self,
        inputs: Vec<Input>,
        time: u64,
        retention: Millis,
        (stories, batch): (&mut Vec<StoryUpdate>, &mut Vec<Story>),
        writes: &mut Vec<ActivityChange>,
    ) {
        let mut activities = Vec::new();
        for input in inputs {
            match input {
                Input::Newest(t) => self.newest = Some(self.newest.map_or(t, |n| n.max(t))),
                Input::Event(StoryEvent::Delete(id)) => self.delete(id, time, stories, writes),
                Input::Event(StoryEvent::Activity(a)) => activities.push(a),
                Input::Event(StoryEvent::Restored(restored)) => {
                    self.restore(*restored, time, (stories, batch), writes, &mut activities)
                }
            }
        }
        let cutoff = self
            .newest
            .map_or(Millis::MIN, |n| n.saturating_sub(retention));
        // One growth for the epoch: a growth rehashes every activity held,
        // reading each one's id from memory (a resume brings them all at once).
        self.present.reserve(activities.len());
        for mut activity in activities {
            if activity.time < cutoff
                || self.deleted.contains(&activity.id)
                || self.present.contains(&*activity.id)
            {
                continue;
            }
            self.pools.share_all(&mut activity);
            let activity = Arc::new(activity);
            Self::stories(&activity, time, 1, stories);
            self.by_time.insert(Story(activity.clone()));
            self.present.insert(ById(activity.clone()));
            writes.push(ActivityChange::Put(activity));
        }
        while let Some(oldest) = self.by_time.first() {
            if oldest.0.time >= cutoff {
                break;
            }
            let id = oldest.0.id.clone();
            self.remove(&id, time, stories, writes);
        }
    }
}

impl<'scope> KeepStories<'scope> for StreamVec<'scope, u64, StoryEvent> {
    fn keep_stories(
        self,
        horizon: StreamVec<'scope, u64, Millis>,
        retention: Duration,
        checkpoints: Option<Arc<Checkpoints>>,
        store_holds_restored: bool,
    ) -> (
        Stories<'scope>,
        StreamVec<'scope, u64, RestoredStories>,
        StreamVec<'scope, u64, ActivityChange>,
    ) {
        let resumed = checkpoints.as_ref().is_some_and(|c| c.resumed().is_some());
        let skip_writes_before = if resumed && store_holds_restored {
            crate::checkpoint::RESTORE_EPOCHS
        } else {
            0
        };
        let mut snapshots = Snapshots::new(checkpoints, "stories", self.scope().index());
        let retention = Millis::try_from(retention.as_millis()).unwrap_or(Millis::MAX);
        let mut builder = OperatorBuilder::new("KeepStories".to_owned(), self.scope());
        let mut events = builder.new_input(self, Exchange::new(StoryEvent::route));
        let mut newest = builder.new_input(horizon, timely::dataflow::channels::pact::Pipeline);
        let (stories_out, stories) = builder.new_output();
        let (restored_out, restored) = builder.new_output();
        let (writes_out, writes) = builder.new_output();
        let mut stories_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<StoryUpdate>>>::from(stories_out);
        let mut restored_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<RestoredStories>>>::from(restored_out);
        let mut writes_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<ActivityChange>>>::from(writes_out);

        builder.build(move |_caps| {
            let mut stash = EpochStash::new(3);
            let mut state = Retained::default();
            let mut story_buf = Vec::new();
            let mut batch = Vec::new();
            let mut write_buf = Vec::new();
            move |frontiers| {
                events.for_each(|cap, data| stash.stash(&cap, data.drain(..).map(Input::Event)));
                newest.for_each(|cap, data| stash.stash(&cap, data.drain(..).map(Input::Newest)));
                let mut stories_out = stories_out.activate();
                let mut restored_out = restored_out.activate();
                let mut writes_out = writes_out.activate();
                for (caps, inputs) in stash.take_ready(&[&frontiers[0], &frontiers[1]]) {
                    let time = *caps[0].time();
                    let due = snapshots.due(time);
                    if !due.is_empty() {
                        let part = state.part();
                        snapshots.save(&due, part.records(), part);
                    }
                    let outputs = (&mut story_buf, &mut batch);
                    state.epoch(inputs, time, retention, outputs, &mut write_buf);
                    if time < skip_writes_before {
                        write_buf.clear();
                    }
                    stories_out
                        .session(&caps[0])
                        .give_iterator(story_buf.drain(..));
                    let restored = RestoredStories::take(time, &mut batch);
                    restored_out
                        .session(&caps[1])
                        .give_iterator(restored.into_iter());
                    writes_out
                        .session(&caps[2])
                        .give_iterator(write_buf.drain(..));
                }
                if let Some(frontier) = crate::bolt::passed(frontiers) {
                    let due = snapshots.due(frontier);
                    if !due.is_empty() {
                        let part = state.part();
                        snapshots.save(&due, part.records(), part);
                    }
                }
                crate::bolt::release_burst(&mut story_buf);
                crate::bolt::release_burst(&mut write_buf);
            }
        });
        (stories.as_collection(), restored, writes)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::{LoadedStories, SavedActivity, StoriesPart};
    use crate::event::{Activity, TypedId};

    /// An activity for each `(n, time)`, their typed ids one handle each
    /// (as the bolt's pool keeps them).
    fn activities(at: impl IntoIterator<Item = (u64, i64)>) -> Vec<Activity> {
        let mut handles: HashMap<String, TypedId> = HashMap::new();
        let mut id = |s: String| {
            let parsed = TypedId::parse(&s).expect("a typed id");
            handles.entry(s).or_insert(parsed).clone()
        };
        at.into_iter()
            .map(|(n, time)| Activity {
                id: format!("a{n}").into(),
                time,
                actor: id(format!("user:u{}", n % 7)),
                verb: if n.is_multiple_of(2) { "post" } else { "love" }.into(),
                object: id(format!("thing:t{}", n % 5)),
                target: n.is_multiple_of(3).then(|| id(format!("board:b{}", n % 4))),
                extra: n.is_multiple_of(4).then(|| format!("{{\"n\":{n}}}").into()),
            })
            .collect()
    }

    fn load(part: &StoriesPart) -> bincode::Result<LoadedStories> {
        bincode::deserialize(&bincode::serialize(part).expect("a part encodes"))
    }

    #[test]
    fn a_loaded_part_holds_what_was_saved_with_one_handle_per_typed_id() {
        let activities = activities((0..200).map(|n| (n, 1_000 + n as i64)));
        let deleted = (0..3).map(|n| Arc::from(format!("gone{n}")));
        let part = StoriesPart::of(Some(1_199), activities.iter(), deleted);
        let loaded = load(&part).expect("the part loads");
        assert_eq!(loaded.records(), part.records());
        assert_eq!(loaded.newest, Some(1_199));
        let got: Vec<&Activity> = loaded.activities.iter().map(|a| &**a).collect();
        assert_eq!(got, activities.iter().collect::<Vec<_>>());
        assert_eq!(loaded.deleted, ["gone0", "gone1", "gone2"].map(Arc::from));
        // Each typed id is in the table once, and every activity holds
        // the table's handle of it.
        let mut names: Vec<&str> = loaded.typed_ids.iter().map(|t| t.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), loaded.typed_ids.len());
        for a in &loaded.activities {
            for typed in [Some(&a.actor), Some(&a.object), a.target.as_ref()]
                .into_iter()
                .flatten()
            {
                let table = loaded
                    .typed_ids
                    .iter()
                    .find(|t| *t == typed)
                    .expect("in the table");
                assert_eq!(
                    table.address(),
                    typed.address(),
                    "{typed} shares the table's handle"
                );
            }
        }
    }

    #[test]
    fn a_part_saved_out_of_order_loads_oldest_first() {
        let activities = activities([(30, 30), (10, 10), (20, 20)]);
        let part = StoriesPart::of(None, activities.iter(), std::iter::empty());
        let loaded = load(&part).expect("the part loads");
        let times: Vec<i64> = loaded.activities.iter().map(|a| a.time).collect();
        assert_eq!(times, [10, 20, 30]);
    }

    #[test]
    fn a_part_naming_a_typed_id_outside_its_table_does_not_load() {
        let mut part = StoriesPart::of(None, activities([(1, 5)]).iter(), std::iter::empty());
        let saved: &mut SavedActivity = &mut part.activities[0];
        saved.object = part.typed_ids.len() as u32;
        let error = load(&part).expect_err("a corrupt part").to_string();
        assert!(error.contains("names typed id"), "{error}");
    }
}
