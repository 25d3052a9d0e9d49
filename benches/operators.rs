//! Micro-benchmarks of the hot operators' inner steps, beside `feedstorm
//! bench` for the end-to-end figures: decoding an event, the fan-out join
//! (the users a story reaches), the feed-head bolt over a small dataflow
//! (head updates with refills), the digest update, the merge a rebuild
//! does, and a resume's decoding of a checkpoint's stories part.
//! `cargo bench --bench operators`; under `cargo test` each runs once.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use feedstorm::bolt::digest_groups::DigestGroups;
use feedstorm::bolt::fanout::{Entry, Fanout, Reach, Tid};
use feedstorm::bolt::stories::{LoadedStories, StoriesPart};
use feedstorm::bolt::user_runs::UserRuns;
use feedstorm::config::DigestConfig;
use feedstorm::digest::DigestSpec;
use feedstorm::event::{decode, Activity, TypedId};
use feedstorm::feed::Story;

const USERS: u32 = 2_000;
const THINGS: u32 = 500;
const STORIES: u32 = 5_000;
/// Interests per user.
const FOLLOWS: u32 = 40;

/// A deterministic spread (no RNG: the same workload every run).
fn spread(i: u32, n: u32) -> u32 {
    (i.wrapping_mul(2_654_435_761) >> 7) % n
}

fn story(i: u32) -> Story {
    Story(Arc::new(Activity {
        id: format!("a{i}").into(),
        time: 1_795_219_200_000 + i64::from(spread(i, 100_000)) * 1_000,
        actor: TypedId::parse(&format!("user:u{}", spread(i, USERS))).unwrap(),
        verb: ["love", "post", "comment"][(i % 3) as usize].into(),
        object: TypedId::parse(&format!("listing:l{}", spread(i + 7, THINGS))).unwrap(),
        target: i
            .is_multiple_of(2)
            .then(|| TypedId::parse(&format!("user:u{}", spread(i + 3, USERS))).unwrap()),
        extra: None,
    }))
}

/// A fan-out state: every user follows `FOLLOWS` users and listings, and
/// `STORIES` stories are kept.
fn fanout() -> (Fanout, Vec<Tid>) {
    let mut fanout = Fanout::default();
    let users: Vec<Tid> = (0..USERS)
        .map(|u| {
            fanout
                .typed_ids
                .intern(&TypedId::parse(&format!("user:u{u}")).unwrap())
        })
        .collect();
    for (u, &user) in users.iter().enumerate() {
        for k in 0..FOLLOWS {
            let name = if k % 2 == 0 {
                format!("user:u{}", spread(u as u32 * FOLLOWS + k, USERS))
            } else {
                format!("listing:l{}", spread(u as u32 * FOLLOWS + k, THINGS))
            };
            let interest = fanout.typed_ids.intern(&TypedId::parse(&name).unwrap());
            fanout.follow(user, interest);
        }
    }
    for i in 0..STORIES {
        fanout.add_story(&story(i));
    }
    fanout.end_epoch();
    (fanout, users)
}

/// The entries of the stories `fanout` keeps, oldest story first.
fn kept_entries(fanout: &Fanout) -> Vec<feedstorm::bolt::fanout::Entry> {
    (0..STORIES)
        .filter_map(|i| fanout.entry_of(&story(i)))
        .collect()
}

fn decode_events(c: &mut Criterion) {
    let line = br#"{"type":"activity","id":"a123456","time":"2026-11-21T10:00:00.123Z","actor":"user:rob","verb":"love","object":"listing:guy-with-bear","target":"user:travis","extra":{"n":1}}"#;
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(line.len() as u64));
    group.bench_function("activity", |b| b.iter(|| decode(line, 1 << 20).unwrap()));
    group.finish();
}

fn fan_out(c: &mut Criterion) {
    let (fanout, _) = fanout();
    let entries = kept_entries(&fanout);
    let mut reach = Reach::default();
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(entries.len() as u64));
    group.bench_function("reach every story", |b| {
        b.iter(|| {
            let mut delivered = 0u64;
            for &entry in &entries {
                reach.each(&fanout, entry, |_| delivered += 1);
            }
            delivered
        })
    });
    group.bench_function("group every story's deliveries by user", |b| {
        let changed: Vec<(Entry, isize)> = entries.iter().map(|&entry| (entry, 1)).collect();
        let mut runs = UserRuns::default();
        b.iter(|| {
            let mut grouped = 0usize;
            runs.for_each(&changed, &fanout, |_, run| grouped += run.len());
            grouped
        })
    });
    group.finish();
}

fn rebuild_merge(c: &mut Criterion) {
    let (fanout, users) = fanout();
    let mut group = c.benchmark_group("rebuild");
    group.throughput(Throughput::Elements(1));
    group.bench_function("merge a 200-entry head", |b| {
        let mut at = 0;
        b.iter(|| {
            at = (at + 1) % users.len();
            fanout.merged(users[at], None, 200).len()
        })
    });
    group.finish();
}

fn digest_update(c: &mut Criterion) {
    let (fanout, users) = fanout();
    let entries = kept_entries(&fanout);
    let specs = vec![DigestSpec::new(&DigestConfig::default())];
    let mut group = c.benchmark_group("digest");
    group.throughput(Throughput::Elements(entries.len() as u64));
    group.bench_function("deliver every story to 50 users' digests", |b| {
        b.iter_batched(
            || {
                let mut digests = DigestGroups::new(specs.clone(), 10);
                for &entry in &entries {
                    digests.add_story(entry, &fanout.slots);
                }
                digests
            },
            |mut digests| {
                let mut reach = Reach::default();
                for &entry in &entries {
                    reach.each(&fanout, entry, |user| {
                        if users[..50].contains(&user) {
                            digests.deliver(user, entry, true, &fanout.slots);
                        }
                    });
                }
                let mut out = Vec::new();
                digests.end_epoch(&fanout, &mut out);
                out.len()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// The feed-head bolt alone in a dataflow of one worker: `USERS` users'
/// interests, then `STORIES` stories in 50 epochs, each delivered into
/// heads of 20 entries (slack 5), with the head changes counted.
fn head_update(c: &mut Criterion) {
    use differential_dataflow::input::Input;
    use feedstorm::bolt::feed_head::{HeadSettings, MaintainHead};
    use feedstorm::bolt::interests::Edge;
    use timely::dataflow::operators::{Input as _, Inspect, Probe};

    let edges: Vec<Edge> = (0..USERS)
        .flat_map(|u| {
            (0..FOLLOWS / 4).map(move |k| {
                let of = format!("user:u{}", spread(u * FOLLOWS + k, USERS));
                Edge::follows(
                    TypedId::parse(&of).unwrap(),
                    TypedId::parse(&format!("user:u{u}")).unwrap(),
                )
            })
        })
        .collect();
    let stories: Vec<Story> = (0..STORIES).map(story).collect();
    let mut group = c.benchmark_group("feed_head");
    group.sample_size(10);
    group.throughput(Throughput::Elements(u64::from(STORIES)));
    group.bench_function("interests, then stories in 50 epochs", |b| {
        b.iter(|| {
            let (edges, stories) = (edges.clone(), stories.clone());
            timely::execute_directly(move |worker| {
                let changes = std::rc::Rc::new(std::cell::Cell::new(0usize));
                let counted = changes.clone();
                let (mut edges_in, mut stories_in, probe) = worker.dataflow::<u64, _, _>(|scope| {
                    let (edges_in, edge_collection) = scope.new_collection::<Edge, isize>();
                    let (stories_in, story_collection) = scope.new_collection::<Story, isize>();
                    let (_requests_in, requests) = scope.new_input();
                    let (_restored_in, restored) = scope.new_input();
                    let settings = HeadSettings {
                        feed_size: 20,
                        slack: 5,
                        materialize: feedstorm::config::Materialize::All,
                        active_window: std::time::Duration::from_secs(3_600),
                        recover_into: None,
                        digests: Vec::new(),
                    };
                    let drpc = Arc::new(feedstorm::drpc::Drpc::new(0));
                    let status = Arc::new(feedstorm::status::Status::new("bench", 1));
                    let (heads, _, _) = edge_collection.maintain_head(
                        story_collection,
                        restored,
                        requests,
                        settings,
                        drpc,
                        status,
                    );
                    let probe = heads
                        .inspect(move |_| counted.set(counted.get() + 1))
                        .probe()
                        .0;
                    (edges_in, stories_in, probe)
                });
                for edge in edges {
                    edges_in.insert(edge);
                }
                for (epoch, chunk) in stories.chunks(stories.len() / 50).enumerate() {
                    edges_in.advance_to(epoch as u64 + 1);
                    stories_in.advance_to(epoch as u64 + 1);
                    for story in chunk {
                        stories_in.insert(story.clone());
                    }
                }
                let end = 52;
                edges_in.advance_to(end);
                stories_in.advance_to(end);
                edges_in.flush();
                stories_in.flush();
                while probe.less_than(&end) {
                    worker.step();
                }
                assert!(changes.get() > 0, "the heads changed");
                changes.get()
            })
        })
    });
    group.finish();
}

/// A resume's first step on each worker: decoding its stories part (the
/// checkpoint's largest) into the handles the bolt keeps.
fn restore_stories_part(c: &mut Criterion) {
    let stories: Vec<Story> = (0..50_000).map(story).collect();
    let deleted = (0..1_000).map(|i| Arc::from(format!("gone{i}")));
    let part = StoriesPart::of(Some(0), stories.iter().map(|s| &*s.0), deleted);
    let bytes = bincode::serialize(&part).unwrap();
    let mut group = c.benchmark_group("checkpoint");
    group.throughput(Throughput::Elements(50_000));
    group.bench_function("decode and restore a 50,000-activity stories part", |b| {
        b.iter(|| {
            let part: LoadedStories = bincode::deserialize(&bytes).unwrap();
            let restored = part.into_restored(0);
            assert_eq!(restored.activities.len(), 50_000);
            restored
        })
    });
    group.finish();
}

criterion_group!(
    operators,
    decode_events,
    restore_stories_part,
    fan_out,
    rebuild_merge,
    digest_update,
    head_update
);
criterion_main!(operators);
