//! Each bolt alone, in a small dataflow of its own, on 1, 2 and 3 workers:
//! its output stream captured, replayed to a final state, and compared with
//! the reference model (the `feedstorm-reference` crate, its own parser and
//! types) on seeded random sequences. The whole topology, store and HTTP
//! included, is judged by `oracle.rs`; here a wrong answer points at one
//! bolt. The sink (`WriteTo`) and the recovery gate are judged through the
//! store they write, in `oracle.rs` and `redis.rs`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::judge::{self, reference};
use common::*;
use differential_dataflow::{AsCollection, VecCollection};
use feedstorm::bolt::feed_head::{HeadSettings, MaintainHead};
use feedstorm::bolt::interests::Edge;
use feedstorm::bolt::stories::RestoredStories;
use feedstorm::bolt::{ActivityChange, InterestEvent, KeepStories, ResolveInterests, StoryEvent};
use feedstorm::config::{DigestConfig, FeedConfig, Materialize, NotificationsConfig};
use feedstorm::digest::{DigestChange, DigestSpec, Group, GroupChange};
use feedstorm::event::Relation;
use feedstorm::event::{decode, Event, Millis};
use feedstorm::feed::{HeadChange, Story};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Input, Inspect, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle, Scope, StreamVec};

/// Events per epoch.
const EPOCH: usize = 37;

/// What a bolt's output stream carried: each record, its time and diff.
type Captured<D> = Arc<Mutex<Vec<D>>>;

/// The bolts' inputs on one worker, as the topology's `Inputs` fills them.
struct Inputs {
    interests: InputHandleVec<u64, InterestEvent>,
    stories: InputHandleVec<u64, StoryEvent>,
    newest: InputHandleVec<u64, Millis>,
}

/// What the interests and stories bolts give the bolts downstream.
type Upstream<'s> = (
    VecCollection<'s, u64, Edge, isize>,
    VecCollection<'s, u64, Story, isize>,
    StreamVec<'s, u64, RestoredStories>,
    StreamVec<'s, u64, ActivityChange>,
);

impl Inputs {
    /// The interests and stories bolts over these inputs, wired as the
    /// topology wires them (`follow_self`, `retention`).
    fn upstream<'s>(&mut self, scope: Scope<'s, u64>, retention: Duration) -> Upstream<'s> {
        let edges = scope
            .input_from(&mut self.interests)
            .resolve_interests(true, None);
        let newest = scope.input_from(&mut self.newest).broadcast();
        let (stories, restored, writes) = scope
            .input_from(&mut self.stories)
            .keep_stories(newest, retention, None, false);
        (edges, stories, restored, writes)
    }

    fn new() -> Inputs {
        Inputs {
            interests: InputHandleVec::new(),
            stories: InputHandleVec::new(),
            newest: InputHandleVec::new(),
        }
    }

    /// Sends this worker's share of `events` (every `peers`-th), `EPOCH`
    /// a time, then runs until `probe` has passed them all.
    fn run(
        mut self,
        events: &[Event],
        index: usize,
        peers: usize,
        probe: &ProbeHandle<u64>,
        step: impl Fn(),
    ) {
        for (epoch, chunk) in events.chunks(EPOCH).enumerate() {
            let epoch = epoch as u64;
            self.interests.advance_to(epoch);
            self.stories.advance_to(epoch);
            self.newest.advance_to(epoch);
            let mine = chunk.iter().enumerate().filter(|(i, _)| i % peers == index);
            for (_, event) in mine {
                self.newest.send(event.time());
                let (interests, stories) = (&mut self.interests, &mut self.stories);
                feedstorm::topology::split(
                    event.clone(),
                    |e| interests.send(e),
                    |e| stories.send(e),
                );
            }
            step();
        }
        let end = events.len().div_ceil(EPOCH) as u64 + 1;
        self.interests.advance_to(end);
        self.stories.advance_to(end);
        self.newest.advance_to(end);
        drop(self);
        while probe.less_than(&end) {
            step();
        }
    }
}

/// The events of `lines` as the spouts decode them: the bolts' input.
fn events(lines: &[String]) -> Vec<Event> {
    lines
        .iter()
        .filter_map(|l| decode(l.as_bytes(), 1 << 20).ok())
        .collect()
}

/// Sums the diffs of each record: the records present at the end, with
/// their multiplicity (never negative).
fn counts<D: Ord + Clone + std::fmt::Debug>(updates: &[(D, isize)]) -> BTreeMap<D, isize> {
    let mut counts: BTreeMap<D, isize> = BTreeMap::new();
    for (record, diff) in updates {
        *counts.entry(record.clone()).or_default() += diff;
    }
    counts.retain(|record, count| {
        assert!(*count >= 0, "{record:?} present {count} times");
        *count > 0
    });
    counts
}

/// Runs `build` on `workers` workers over `events`: `build` wires the bolt
/// under test from the inputs' streams and returns its probe.
fn run<B>(workers: usize, events: Vec<Event>, build: B)
where
    B: for<'s> Fn(Scope<'s, u64>, &mut Inputs) -> ProbeHandle<u64> + Send + Sync + 'static,
{
    let events = Arc::new(events);
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mut inputs = Inputs::new();
        let probe = worker.dataflow::<u64, _, _>(|scope| build(scope, &mut inputs));
        let worker = std::cell::RefCell::new(worker);
        inputs.run(&events, index, peers, &probe, || {
            worker.borrow_mut().step();
        });
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
}

fn shape(users: usize) -> Shape {
    Shape {
        events: 1_200,
        users,
        things: 6,
        ids: 400,
        times: 150,
        spacing: 60_000,
    }
}

/// The interests bolt: last writer wins per (user, id, relation); with
/// `follow_self` every user seen follows themselves.
#[test]
fn interests_bolt_resolves_follows_and_blocks_like_the_reference() {
    for (seed, workers) in [(1, 1), (2, 2), (3, 3)] {
        let lines = random_lines_mixed(seed, shape(12), BLOCK_MIX);
        let captured: Captured<(Edge, isize)> = Arc::default();
        let sink = captured.clone();
        run(workers, events(&lines), move |scope, inputs| {
            let sink = sink.clone();
            scope
                .input_from(&mut inputs.interests)
                .resolve_interests(true, None)
                .inner
                .inspect(move |(edge, _, diff)| sink.lock().unwrap().push((edge.clone(), *diff)))
                .probe()
                .0
        });
        let judged = judge::events(&lines);
        // Every relation in force once, and with `follow_self` every user
        // seen (acting or changing a relation) once more following themselves.
        let mut want: BTreeMap<(String, String, &str), isize> = BTreeMap::new();
        for (relation, name) in [
            (reference::Relation::Follow, "follows"),
            (reference::Relation::Block, "blocks"),
        ] {
            for (user, ids) in reference::in_force(&judged, relation) {
                for id in ids {
                    *want
                        .entry((user.to_owned(), id.to_owned(), name))
                        .or_default() += 1;
                }
            }
        }
        let seen: BTreeSet<&str> = judged
            .iter()
            .filter_map(|e| match e {
                reference::Event::Activity(a) => Some(a.actor.as_str()),
                reference::Event::Relation { user, .. } => Some(user.as_str()),
                reference::Event::Delete { .. } => None,
            })
            .collect();
        for user in seen {
            *want
                .entry((user.to_owned(), user.to_owned(), "follows"))
                .or_default() += 1;
        }
        let got: BTreeMap<(String, String, &str), isize> = counts(&captured.lock().unwrap())
            .into_iter()
            .map(|(e, n)| {
                let relation = if e.relation == Relation::Follows {
                    "follows"
                } else {
                    "blocks"
                };
                ((e.user.to_string(), e.of.to_string(), relation), n)
            })
            .collect();
        assert_eq!(got, want, "seed {seed}, {workers} workers");
    }
}

/// The stories bolt: the first copy of each id, never deleted, within
/// retention of the newest time read; its activity writes (puts and
/// removes, replayed in order) leave exactly those activities.
#[test]
fn stories_bolt_retains_what_the_reference_retains() {
    // 150 distinct minutes: an hour of retention expires most of them.
    let retention = Duration::from_secs(3_600);
    for (seed, workers) in [(11, 1), (12, 2), (13, 3)] {
        let lines = random_lines_mixed(seed, shape(12), CHURN_MIX);
        let stories: Captured<(String, isize)> = Arc::default();
        let writes: Captured<(String, bool)> = Arc::default();
        let (story_sink, write_sink) = (stories.clone(), writes.clone());
        run(workers, events(&lines), move |scope, inputs| {
            let (story_sink, write_sink) = (story_sink.clone(), write_sink.clone());
            let newest = scope.input_from(&mut inputs.newest).broadcast();
            let (kept, _, written) = scope
                .input_from(&mut inputs.stories)
                .keep_stories(newest, retention, None, false);
            let probe = ProbeHandle::new();
            kept.inner
                .inspect(move |(story, _, diff)| {
                    story_sink
                        .lock()
                        .unwrap()
                        .push((story.0.id.to_string(), *diff))
                })
                .probe_with(&probe);
            written
                .inspect(move |change| {
                    write_sink.lock().unwrap().push(match change {
                        ActivityChange::Put(a) => (a.id.to_string(), true),
                        ActivityChange::Remove(id) => (id.to_string(), false),
                    })
                })
                .probe_with(&probe);
            probe
        });
        let settings = reference::Settings {
            retention_ms: retention.as_millis() as i64,
            ..reference::Settings::default()
        };
        let want: BTreeSet<String> = reference::retained(&judge::events(&lines), &settings)
            .iter()
            .map(|a| a.id.clone())
            .collect();
        assert!(want.len() > 20, "seed {seed}: too little retained to test");
        let kept = counts(&stories.lock().unwrap());
        assert!(kept.values().all(|n| *n == 1), "seed {seed}: a story twice");
        let kept: BTreeSet<String> = kept.into_keys().collect();
        assert_eq!(kept, want, "seed {seed}, {workers} workers: stories");
        // Writes of one id come from one worker, in order.
        let mut stored = BTreeSet::new();
        for (id, put) in writes.lock().unwrap().iter() {
            if *put {
                stored.insert(id.clone());
            } else {
                stored.remove(id);
            }
        }
        assert_eq!(
            stored, want,
            "seed {seed}, {workers} workers: activity writes"
        );
    }
}

/// Feed-head settings for the tests: small heads, so refills happen.
fn head_settings(feed: &FeedConfig, digests: &[DigestConfig]) -> HeadSettings {
    HeadSettings {
        feed_size: feed.feed_size,
        slack: feed.slack,
        materialize: Materialize::All,
        active_window: feed.active_window,
        recover_into: None,
        digests: digests.iter().map(DigestSpec::new).collect(),
    }
}

/// Replays digest changes: each user's groups by key, then in digest
/// order (newest group first, ties by key ascending), as the reference's.
fn replay_digests(changes: &[DigestChange]) -> BTreeMap<String, Vec<reference::Group>> {
    let mut digests: BTreeMap<String, BTreeMap<String, Group>> = BTreeMap::new();
    for change in changes {
        let groups = digests.entry(change.user.to_string()).or_default();
        match &change.change {
            GroupChange::Put(group) => {
                groups.insert(group.key.to_string(), (**group).clone());
            }
            GroupChange::Remove(key) => {
                groups.remove(key);
            }
            GroupChange::Reset => groups.clear(),
        }
    }
    digests
        .into_iter()
        .filter(|(_, groups)| !groups.is_empty())
        .map(|(user, groups)| {
            let mut groups: Vec<reference::Group> = groups.values().map(plain_group).collect();
            groups.sort_by(|a, b| (b.last_time, &a.key).cmp(&(a.last_time, &b.key)));
            (user, groups)
        })
        .collect()
}

/// A group as the API shows it (its JSON), in the reference's type.
fn plain_group(group: &Group) -> reference::Group {
    judge::group_of_json(&serde_json::to_value(group).unwrap())
}

/// The feed-head bolt (with its fan-out, digests of each feed and top-K):
/// fed by the interests and stories bolts, its head changes replay to
/// exactly the reference's heads and its digest changes to the reference's
/// digests, with slack 0 (a refill on nearly every retraction) and 1.
#[test]
fn feed_head_bolt_keeps_the_reference_heads_and_digests() {
    let digest: DigestConfig =
        toml::from_str("max_actors = 2\nmax_activities = 2\ndigest_size = 3").unwrap();
    for (seed, workers, slack) in [(21, 1, 0), (22, 2, 1), (23, 3, 0)] {
        let lines = random_lines_mixed(seed, shape(10), BLOCK_MIX);
        let feed = FeedConfig {
            feed_size: 5,
            slack,
            ..FeedConfig::default()
        };
        let heads: Captured<(String, i64, String, isize)> = Arc::default();
        let digests: Captured<DigestChange> = Arc::default();
        let (head_sink, digest_sink) = (heads.clone(), digests.clone());
        let settings = head_settings(&feed, std::slice::from_ref(&digest));
        run(workers, events(&lines), move |scope, inputs| {
            let (head_sink, digest_sink) = (head_sink.clone(), digest_sink.clone());
            let (edges, stories, restored, _) = inputs.upstream(scope, feed.retention);
            let everywhere = stories.inner.broadcast().as_collection();
            let (_, requests) = scope.new_input();
            let drpc = Arc::new(feedstorm::drpc::Drpc::new(0));
            let status = Arc::new(feedstorm::status::Status::new("bolts", 1));
            let (head_changes, digest_changes, _) = edges.maintain_head(
                everywhere,
                restored.broadcast(),
                requests,
                settings.clone(),
                drpc,
                status,
            );
            let probe = ProbeHandle::new();
            head_changes
                .inspect(move |(user, key, diff): &HeadChange| {
                    let change = (user.to_string(), key.time, key.id.to_string(), *diff);
                    head_sink.lock().unwrap().push(change)
                })
                .probe_with(&probe);
            digest_changes
                .inspect(move |change| digest_sink.lock().unwrap().push(change.clone()))
                .probe_with(&probe);
            probe
        });
        let run = format!("seed {seed}, {workers} workers, slack {slack}");
        let updates: Vec<((String, reference::Entry), isize)> = heads
            .lock()
            .unwrap()
            .iter()
            .map(|(user, time, id, diff)| {
                let entry = reference::Entry {
                    time: *time,
                    id: id.clone(),
                };
                ((user.clone(), entry), *diff)
            })
            .collect();
        let mut got = judge::Heads::new();
        for ((user, entry), n) in counts(&updates) {
            assert_eq!(n, 1, "{run}: {user} holds {entry:?} {n} times");
            got.entry(user).or_default().push(entry);
        }
        for head in got.values_mut() {
            head.sort_by(|a, b| b.cmp(a));
        }
        let topology_feed = judge::settings(&feed);
        let judged = judge::events(&lines);
        assert_same(
            &format!("{run}: heads"),
            &reference::feeds(&judged, &topology_feed),
            &got,
        );
        let want = reference::digests(&judged, &topology_feed, &judge::digest_settings(&digest));
        assert_same(
            &format!("{run}: digests"),
            &want,
            &replay_digests(&digests.lock().unwrap()),
        );
    }
}

/// The notification bolt: stories by target (not by the actor), minus
/// what the target blocks, grouped with exact counts.
#[test]
fn notification_bolt_keeps_the_reference_notification_feeds() {
    let notifications: NotificationsConfig =
        toml::from_str("max_actors = 2\nmax_activities = 2\ndigest_size = 3").unwrap();
    for (seed, workers) in [(31, 1), (32, 2), (33, 3)] {
        let lines = random_lines_mixed(seed, shape(8), BLOCK_MIX);
        let feed = FeedConfig::default();
        let captured: Captured<DigestChange> = Arc::default();
        let sink = captured.clone();
        let spec = DigestSpec::notifications(&notifications);
        run(workers, events(&lines), move |scope, inputs| {
            let sink = sink.clone();
            let (edges, stories, _, _) = inputs.upstream(scope, feed.retention);
            let status = Arc::new(feedstorm::status::Status::new("bolts", 1));
            feedstorm::topology::notify(&stories, &edges, spec.clone(), None, status)
                .inspect(move |change| sink.lock().unwrap().push(change.clone()))
                .probe()
                .0
        });
        let want = reference::notifications(
            &judge::events(&lines),
            &judge::settings(&feed),
            &judge::notification_settings(&notifications),
        );
        assert!(
            want.len() > 3,
            "seed {seed}: too few notification feeds to test"
        );
        let got = replay_digests(&captured.lock().unwrap());
        assert_same(
            &format!("seed {seed}, {workers} workers: notifications"),
            &want,
            &got,
        );
    }
}

/// The sink: the feed-head and notification bolts' changes and the
/// activity writes, written by `WriteTo` into Redis (a single server and a
/// cluster) and read back with a plain client following the documented
/// layout, equal the reference. Only with `--features server-tests`.
#[cfg(feature = "server-tests")]
#[test]
fn write_to_bolt_leaves_the_reference_feeds_in_redis() {
    use feedstorm::bolt::{Write, WriteTo};
    use feedstorm::store::{RedisStore, Store};
    use timely::dataflow::operators::vec::Map;
    use timely::dataflow::operators::Concatenate;

    for (target, workers) in [
        (common::redis_target::single(), 2),
        (common::redis_target::cluster(), 3),
    ] {
        let prefix = target.prefix("bolt");
        let lines = random_lines_mixed(41, shape(10), BLOCK_MIX);
        let dir = tempfile::tempdir().unwrap();
        let mut topology = file_topology(
            &dir.path().join("unused.jsonl"),
            false,
            FeedConfig::default(),
            dir.path(),
        );
        topology.digests = vec![DigestConfig::default()];
        topology.notifications = NotificationsConfig::default();
        let store: Arc<dyn Store> = Arc::new(RedisStore::open(&target.sink(&prefix)).unwrap());
        let settings = head_settings(&topology.feed, &topology.digests);
        let (feed, spec) = (
            topology.feed.clone(),
            DigestSpec::notifications(&topology.notifications),
        );
        run(workers, events(&lines), move |scope, inputs| {
            let (edges, stories, restored, activity_writes) =
                inputs.upstream(scope, feed.retention);
            let status = Arc::new(feedstorm::status::Status::new("bolts", 1));
            let notified =
                feedstorm::topology::notify(&stories, &edges, spec.clone(), None, status.clone());
            let everywhere = stories.inner.broadcast().as_collection();
            let (_, requests) = scope.new_input();
            let drpc = Arc::new(feedstorm::drpc::Drpc::new(0));
            let (heads, digests, _) = edges.maintain_head(
                everywhere,
                restored.broadcast(),
                requests,
                settings.clone(),
                drpc,
                status.clone(),
            );
            let writes = vec![
                activity_writes.map(Write::Activity),
                notified.map(Write::Digest),
                digests.map(Write::Digest),
                heads.map(Write::Head),
            ];
            scope
                .concatenate(writes)
                .write_to(
                    store.clone(),
                    status,
                    Arc::new(feedstorm::push::Pushes::new()),
                )
                .probe()
                .0
        });
        assert_redis_matches_reference(&target, &prefix, &lines, &topology, target.name);
    }
}
