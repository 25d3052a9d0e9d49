//! The topology against the reference model: seeded random workloads with
//! every adversarial case, on 1, 2 and 4 workers, must give exactly the
//! feeds that a from-scratch recomputation gives.

mod common;

use std::time::Duration;

use common::*;
use feedstorm::config::FeedConfig;

fn check(seed: u64, shape: Shape, feed: FeedConfig) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let lines = random_lines(seed, shape);
    write_lines(&path, &lines);
    let expected = feedstorm::reference::feeds(&decode_all(&lines), &feed);
    assert!(!expected.is_empty(), "workload too small to test anything");
    for workers in [1, 2, 4] {
        let topology = file_topology(&path, false, feed.clone(), dir.path());
        let (store, _) = run_to_end(&topology, workers);
        let actual = store_feeds(store.as_ref());
        if actual != expected {
            let diff: Vec<_> = expected
                .iter()
                .filter(|(u, h)| actual.get(*u) != Some(h))
                .map(|(u, h)| format!("{u}: expected {h:?}\n   got {:?}", actual.get(u)))
                .chain(
                    actual
                        .keys()
                        .filter(|u| !expected.contains_key(*u))
                        .map(|u| format!("{u}: unexpected feed")),
                )
                .take(3)
                .collect();
            panic!(
                "seed {seed}, {workers} workers, {shape:?}: feeds differ\n{}",
                diff.join("\n")
            );
        }
    }
}

fn small_heads() -> FeedConfig {
    FeedConfig {
        feed_size: 4,
        ..FeedConfig::default()
    }
}

#[test]
fn tiny_workloads_with_many_ties() {
    let shape = Shape {
        events: 300,
        users: 5,
        things: 4,
        ids: 60,
        times: 12,
        spacing: 60_000,
    };
    for seed in 0..6 {
        check(seed, shape, small_heads());
    }
}

#[test]
fn default_settings_medium_workload() {
    let shape = Shape {
        events: 3_000,
        users: 40,
        things: 25,
        ids: 1_200,
        times: 400,
        spacing: 1_000,
    };
    for seed in 10..13 {
        check(seed, shape, FeedConfig::default());
    }
}

#[test]
fn retention_forgets_old_stories() {
    // Times span 3 days; keep one day.
    let shape = Shape {
        events: 2_000,
        users: 20,
        things: 10,
        ids: 700,
        times: 72,
        spacing: 3_600_000,
    };
    let feed = FeedConfig {
        feed_size: 10,
        retention: Duration::from_secs(24 * 3600),
        ..FeedConfig::default()
    };
    for seed in 20..23 {
        check(seed, shape, feed.clone());
    }
}

#[test]
fn without_self_interest() {
    let shape = Shape {
        events: 1_500,
        users: 15,
        things: 10,
        ids: 500,
        times: 50,
        spacing: 10_000,
    };
    let feed = FeedConfig {
        feed_size: 7,
        follow_self: false,
        ..FeedConfig::default()
    };
    for seed in 30..33 {
        check(seed, shape, feed.clone());
    }
}

#[test]
fn larger_workload_default_heads() {
    let shape = Shape {
        events: 20_000,
        users: 200,
        things: 100,
        ids: 9_000,
        times: 5_000,
        spacing: 100,
    };
    check(
        40,
        shape,
        FeedConfig {
            feed_size: 25,
            ..FeedConfig::default()
        },
    );
}
