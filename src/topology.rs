//! The topology: spouts' inputs → bolts → sink, wired as one timely dataflow.
//!
//! ```text
//!   events ─┬─ follows, blocks, actors ▶ ResolveInterests ── edges, by user ──┐
//!           │                                                                 ├─▶ MaintainHead ─┬─ heads ─▶ WriteTo ─▶ probe
//!           ├─ activities, deletes ─▶ KeepStories ── stories, to every worker ─┘  (fan-out)     └─ deliveries ─▶ Digest ─▲ │
//!           │                              ├── stories about their target ─▶ Digest (notifications) ─────────────────┤ │
//!           │                              └──────────── activity writes ────────────────────────────────────────────┘
//!           ├─ rebuild requests, by user ─▶ MaintainHead (answered from its stories)
//!           └─ newest time per epoch ──▶ broadcast ──▶ KeepStories (retention)
//! ```

use std::collections::HashSet;
use std::sync::Arc;

use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concatenate, Input, Probe};
use timely::dataflow::operators::{Exchange, Inspect};
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::worker::Worker;

use crate::bolt::feed_head::HeadSettings;
use crate::bolt::interests::InterestsPart;
use crate::bolt::stories::{restored_as_stories, LoadedStories};
use crate::bolt::{
    Digest, InterestEvent, KeepStories, MaintainHead, ResolveInterests, StoryEvent, Write, WriteTo,
};
use crate::checkpoint::Checkpoints;
use crate::cluster::Cluster;
use crate::config::TopologyConfig;
use crate::digest::DigestSpec;
use crate::drpc::{Answer, Drpc, Request};
use crate::event::{Event, Millis, Relation, TypedId};
use crate::push::Pushes;
use crate::status::Status;
use crate::store::Store;
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::StreamVec;

use crate::bolt::interests::Edge;
use crate::bolt::ActivityChange;
use crate::digest::DigestChange;
use crate::feed::Story;

/// The topology's operators by their timely names, as the topology page
/// shows them (beside the inputs, shown as [`crate::observe::SPOUTS`]).
pub const OPERATORS: [&str; 5] = [
    "ResolveInterests",
    "KeepStories",
    "MaintainHead",
    "Digest",
    "WriteTo",
];

/// What an operator of [`OPERATORS`] (or the inputs) does, in a line.
pub fn describe(operator: &str) -> &'static str {
    match operator {
        "ResolveInterests" => "interests: who follows which people and things (LWW per pair)",
        "KeepStories" => "stories: the retained activities, deletes and retention",
        "MaintainHead" => "feed heads and digests per user; answers rebuild-feed (DRPC)",
        "Digest" => "notification feeds: stories about each user, grouped",
        "WriteTo" => "sink: writes each epoch's changes to the store",
        crate::observe::SPOUTS => "the spouts' events into the dataflow, by kind",
        _ => "",
    }
}

/// The dataflow's inputs on one worker. The driver sends decoded events and
/// advances the epoch; this splits each event to the bolts that need it.
pub struct Inputs {
    interests: InputHandleVec<u64, InterestEvent>,
    stories: InputHandleVec<u64, StoryEvent>,
    newest: InputHandleVec<u64, Millis>,
    requests: InputHandleVec<u64, Request>,
    newest_in_epoch: Option<Millis>,
    /// Actors already announced to the interests bolt (a cache: repeats are harmless).
    announced: HashSet<TypedId>,
}

/// Splits `event` between the bolts that need it: an activity announces
/// its actor to the interests bolt (a user who acts follows themselves)
/// and goes to the stories bolt; a follow, unfollow, block or unblock goes
/// to the interests bolt; a delete to the stories bolt.
///
/// ```
/// use feedstorm::bolt::{InterestEvent, StoryEvent};
/// use feedstorm::event::decode;
///
/// let line = br#"{"type":"activity","id":"a","time":1,"actor":"user:rob","verb":"v","object":"a:b"}"#;
/// let (mut interests, mut stories) = (Vec::new(), Vec::new());
/// feedstorm::topology::split(decode(line, 1 << 20).unwrap(), |e| interests.push(e), |e| stories.push(e));
/// assert!(matches!(&interests[..], [InterestEvent::Seen(_)]));
/// assert!(matches!(&stories[..], [StoryEvent::Activity(_)]));
/// ```
pub fn split(
    event: Event,
    mut interests: impl FnMut(InterestEvent),
    mut stories: impl FnMut(StoryEvent),
) {
    match event {
        Event::Activity(activity) => {
            interests(InterestEvent::Seen(activity.actor.clone()));
            stories(StoryEvent::Activity(activity));
        }
        Event::Interest {
            time,
            user,
            interest,
            op,
        } => interests(InterestEvent::Change {
            time,
            user,
            interest,
            op,
        }),
        Event::Delete { id, .. } => stories(StoryEvent::Delete(id.into())),
    }
}

impl Inputs {
    /// Sends one event into the current epoch.
    pub fn send(&mut self, event: Event) {
        let time = event.time();
        self.newest_in_epoch = Some(self.newest_in_epoch.map_or(time, |n| n.max(time)));
        let (interests, announced) = (&mut self.interests, &mut self.announced);
        let stories = &mut self.stories;
        split(
            event,
            |event| {
                // Actors already announced are skipped (a cache: repeats are harmless).
                if let InterestEvent::Seen(actor) = &event {
                    if announced.contains(actor) {
                        return;
                    }
                    if announced.len() >= 100_000 {
                        announced.clear();
                    }
                    announced.insert(actor.clone());
                }
                interests.send(event);
            },
            |event| stories.send(event),
        );
    }

    /// Sends a checkpoint's stories part into the current epoch (a resume's
    /// first): its activities, deleted ids and retention horizon. With
    /// `saved_by` (the part was saved by a worker of the same count), the
    /// part goes to that worker in one piece; else each activity and
    /// deleted id is routed on its own.
    pub fn restore_stories(&mut self, mut part: LoadedStories, saved_by: Option<usize>) {
        if let Some(newest) = part.newest {
            self.newest_in_epoch = Some(self.newest_in_epoch.map_or(newest, |n| n.max(newest)));
        }
        if let Some(worker) = saved_by {
            let restored = part.into_restored(worker);
            self.stories.send(StoryEvent::Restored(Box::new(restored)));
            return;
        }
        for activity in part.take_activities() {
            self.stories.send(StoryEvent::Activity(activity));
        }
        for id in part.deleted {
            self.stories.send(StoryEvent::Delete(id));
        }
    }

    /// Sends a checkpoint's interests part into the current epoch (a
    /// resume's second, after the stories).
    pub fn restore_interests(&mut self, part: InterestsPart) {
        for event in part.events() {
            self.interests.send(event);
        }
    }

    /// Puts a rebuild request into the current epoch: present for this
    /// epoch only, so its answer is a consistent view as of this epoch.
    pub fn request(&mut self, request: Request) {
        self.requests.send(request);
    }

    /// Closes the current epoch and opens `epoch` (which must be later).
    pub fn advance_to(&mut self, epoch: u64) {
        if let Some(newest) = self.newest_in_epoch.take() {
            self.newest.send(newest);
        }
        self.interests.advance_to(epoch);
        self.stories.advance_to(epoch);
        self.newest.advance_to(epoch);
        self.requests.advance_to(epoch);
    }

    /// The open epoch.
    pub fn epoch(&self) -> u64 {
        *self.interests.time()
    }
}

/// What the runtime keeps of a built topology on one worker.
pub struct Built {
    /// The inputs the driver feeds.
    pub inputs: Inputs,
    /// Passes an epoch once it is fully processed and written.
    pub probe: ProbeHandle<u64>,
}

/// Operators per worker that, on a persistent store, write their state
/// whole once the topology has recovered (see [`Status::expect_recovery`]).
pub fn recovering_operators(topology: &TopologyConfig) -> usize {
    1 + usize::from(!topology.digests.is_empty()) + usize::from(topology.notifications.enabled)
}

/// What the topology's operators share with the rest of the process.
pub struct Services {
    /// Where the sink writes.
    pub store: Arc<dyn Store>,
    /// Counters and progress.
    pub status: Arc<Status>,
    /// The rebuild-feed desk the feed-head bolt answers.
    pub drpc: Arc<Drpc>,
    /// Where the sink hands written head changes for the open streams.
    pub pushes: Arc<Pushes>,
    /// Where the bolts save their state, if checkpoints are on.
    pub checkpoints: Option<Arc<Checkpoints>>,
}

/// The activity writes, to each process's store. A process's own store
/// (embedded) serves the users it owns, whose feeds name activities kept
/// anywhere: every process stores them all. A shared store (Redis) takes
/// each write once.
fn to_every_store<'scope>(
    activity_writes: StreamVec<'scope, u64, ActivityChange>,
    cluster: &Cluster,
    persistent: bool,
) -> StreamVec<'scope, u64, ActivityChange> {
    if !cluster.is_distributed() || persistent {
        return activity_writes;
    }
    let (processes, workers) = (cluster.processes, cluster.workers);
    activity_writes
        .flat_map(move |change| (0..processes).map(move |p| (p * workers, change.clone())))
        .exchange(|(worker, _)| *worker as u64)
        .map(|(_, change)| change)
}

/// The notification feeds (SPEC section 4): a story about an activity's
/// target, by someone else, notifies the target, unless the target blocks
/// its actor or object. The wiring of the notification bolt ([`Digest`]):
/// the blocks from the interests bolt's edges, the stories by target.
pub fn notify<'scope>(
    stories: &VecCollection<'scope, u64, Story, isize>,
    edges: &VecCollection<'scope, u64, Edge, isize>,
    spec: DigestSpec,
    recover_into: Option<Arc<dyn Store>>,
    status: Arc<Status>,
) -> StreamVec<'scope, u64, DigestChange> {
    let blocks = edges
        .clone()
        .filter(|edge| edge.relation == Relation::Blocks)
        .map(|edge| (edge.user, edge.of));
    stories
        .clone()
        .flat_map(|story| {
            let target = story.0.target.clone();
            target
                .filter(|target| *target != story.0.actor)
                .map(|target| (target, story))
        })
        .digest(blocks, vec![spec], recover_into, status)
}

/// DRPC's return path: each answer to the process that asked, handed to
/// its desk with the answer's epoch.
fn return_answers(answers: StreamVec<'_, u64, Answer>, drpc: Arc<Drpc>) {
    answers
        .exchange(|(id, _): &Answer| Drpc::origin_worker(*id))
        .inspect_core(move |event| {
            if let Ok((stamp, answers)) = event {
                let time = stamp.least().copied().unwrap_or_default();
                for (id, head) in answers {
                    drpc.answer_at(time, *id, head.clone());
                }
            }
        });
}

/// Builds the feed topology on `worker`.
pub fn build(
    worker: &mut Worker,
    topology: &TopologyConfig,
    services: Services,
    cluster: &Cluster,
) -> Built {
    let Services {
        store,
        status,
        drpc,
        pushes,
        checkpoints,
    } = services;
    let feed = topology.feed.clone();
    let digest_specs: Vec<DigestSpec> = topology.digests.iter().map(DigestSpec::new).collect();
    let notifications = topology
        .notifications
        .enabled
        .then(|| DigestSpec::notifications(&topology.notifications));
    let probe = ProbeHandle::new();
    let mut interests_in = InputHandleVec::new();
    let mut stories_in = InputHandleVec::new();
    let mut newest_in = InputHandleVec::new();
    let mut requests_in = InputHandleVec::new();
    worker.dataflow::<u64, _, _>(|scope| {
        let interest_events = scope.input_from(&mut interests_in);
        let story_events = scope.input_from(&mut stories_in);
        let newest = scope.input_from(&mut newest_in).broadcast();
        let requests = scope.input_from(&mut requests_in);

        let edges = interest_events.resolve_interests(feed.follow_self, checkpoints.clone());
        let (stories, restored, activity_writes) =
            story_events.keep_stories(newest, feed.retention, checkpoints, store.persistent());
        let recover_into = store.persistent().then(|| store.clone());
        let activity_writes = to_every_store(activity_writes, cluster, store.persistent());
        let mut writes = vec![activity_writes.map(Write::Activity)];
        if let Some(spec) = notifications {
            let all = stories.clone().concat(restored_as_stories(&restored));
            let notified = notify(&all, &edges, spec, recover_into.clone(), status.clone());
            writes.push(notified.map(Write::Digest));
        }
        let settings = HeadSettings {
            feed_size: feed.feed_size,
            slack: feed.slack,
            materialize: feed.materialize,
            active_window: feed.active_window,
            recover_into: recover_into.clone(),
            digests: digest_specs,
        };
        // Every worker keeps every story (Storm's all grouping): fan-out is local.
        let everywhere = stories.inner.broadcast().as_collection();
        let (heads, digests, answers) = edges.maintain_head(
            everywhere,
            restored.broadcast(),
            requests,
            settings,
            drpc.clone(),
            status.clone(),
        );
        return_answers(answers, drpc.clone());
        writes.push(digests.map(Write::Digest));
        writes.push(heads.map(Write::Head));
        scope
            .concatenate(writes)
            .write_to(store, status, pushes)
            .probe_with(&probe);
    });
    Built {
        inputs: Inputs {
            interests: interests_in,
            stories: stories_in,
            newest: newest_in,
            requests: requests_in,
            newest_in_epoch: None,
            announced: HashSet::new(),
        },
        probe,
    }
}
