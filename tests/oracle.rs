//! The topology against the reference model: seeded random workloads with
//! every adversarial case, on 1, 2 and 4 workers, must give exactly the
//! feeds, digests and notification feeds that a from-scratch recomputation
//! gives.

mod common;

use std::time::Duration;

use common::*;
use feedstorm::config::{DigestConfig, FeedConfig, NotificationsConfig};

fn check(seed: u64, shape: Shape, feed: FeedConfig) {
    check_with(seed, shape, feed, &[DigestConfig::default()]);
}

fn check_with(seed: u64, shape: Shape, feed: FeedConfig, digests: &[DigestConfig]) {
    check_mixed(seed, shape, DEFAULT_MIX, feed, digests);
}

/// Runs the workload on 1, 2 and 4 workers and compares feeds, every digest
/// of `digests` and the notification feeds, read over HTTP, with the
/// reference model.
fn check_mixed(seed: u64, shape: Shape, mix: Mix, feed: FeedConfig, digests: &[DigestConfig]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let lines = random_lines_mixed(seed, shape, mix);
    write_lines(&path, &lines);
    let mut topology = file_topology(&path, false, feed.clone(), dir.path());
    topology.digests = digests.to_vec();
    topology.notifications = NotificationsConfig::default();
    let expected = expected(&lines, &topology);
    assert!(
        !expected.heads.is_empty(),
        "workload too small to test anything"
    );
    assert!(
        !expected.digests[feedstorm::config::NOTIFICATIONS].is_empty(),
        "no notifications to test"
    );
    for workers in [1, 2, 4] {
        let (shown, _) = run_to_end(&topology, workers, &lines);
        let run = format!("seed {seed}, {workers} workers, {shape:?}");
        assert_shown(&run, &expected, &shown);
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

/// Non-default digests beside the default one: other key fields, hour and
/// half-hour windows, tight group bounds, on times that cross UTC midnight
/// (the generator writes many of them with non-UTC offsets).
#[test]
fn digests_with_other_keys_windows_and_bounds() {
    let shape = Shape {
        events: 2_500,
        users: 12,
        things: 8,
        ids: 900,
        times: 240,
        spacing: 60_000, // four hours around midnight
    };
    let digests: Vec<DigestConfig> = [
        "",
        "name = \"by-actor\"\nkey = [\"actor\", \"verb\"]\nwindow = \"1h\"\nmax_actors = 1\nmax_activities = 2\ndigest_size = 3",
        "name = \"by-target\"\nkey = [\"target\"]\nwindow = \"30m\"\nmax_actors = 3\nmax_activities = 4\ndigest_size = 5",
        "name = \"all-day\"\nkey = []\nmax_actors = 2",
    ]
    .iter()
    .map(|t| toml::from_str(t).unwrap())
    .collect();
    for seed in 50..53 {
        check_with(seed, shape, small_heads(), &digests);
    }
}

/// Bounded candidates with no slack or one entry of it: nearly every
/// retraction in a full head leaves it short, so the same-epoch refill runs
/// all the time, and must keep every head exact.
#[test]
fn bounded_candidates_refill_with_slack_0_and_1() {
    let shape = Shape {
        events: 2_000,
        users: 15,
        things: 10,
        ids: 800,
        times: 300,
        spacing: 1_000,
    };
    for slack in [0, 1] {
        let feed = FeedConfig {
            feed_size: 5,
            slack,
            ..FeedConfig::default()
        };
        for seed in 60..63 {
            check(seed, shape, feed.clone());
        }
    }
}

/// The churn sequences' shape: many events over few users and typed ids,
/// so unfollows and deletes keep reaching held heads and digest groups.
const CHURN_SHAPE: Shape = Shape {
    events: 3_000,
    users: 20,
    things: 12,
    ids: 1_000,
    times: 500,
    spacing: 1_000,
};

/// Unfollow- and delete-heavy sequences (as many unfollows as follows, a
/// quarter of the events deletes), with and without slack.
#[test]
fn unfollow_and_delete_heavy_sequences() {
    let shape = CHURN_SHAPE;
    for (feed_size, slack) in [(5, 0), (5, 1), (20, 0), (20, 50)] {
        let feed = FeedConfig {
            feed_size,
            slack,
            ..FeedConfig::default()
        };
        for seed in 70..72 {
            check_mixed(
                seed,
                shape,
                CHURN_MIX,
                feed.clone(),
                &[DigestConfig::default()],
            );
        }
    }
}

/// Digests with no slack or one group of it, short windows over many
/// buckets and heavy churn: trimming to whole buckets and counting older
/// buckets again on underflow run all the time, and must keep every
/// digest exact.
#[test]
fn bounded_digests_trim_and_refill_with_slack_0_and_1() {
    let shape = Shape {
        events: 3_000,
        users: 15,
        things: 10,
        ids: 1_000,
        times: 300,
        spacing: 600_000, // two days: a hundred half-hour buckets, a few entries each
    };
    let digests: Vec<DigestConfig> = [
        "name = \"half-hour\"\nwindow = \"30m\"\nmax_actors = 2\nmax_activities = 2\ndigest_size = 4",
        "name = \"by-actor\"\nkey = [\"actor\"]\nwindow = \"1h\"\ndigest_size = 3",
    ]
    .iter()
    .map(|t| toml::from_str(t).unwrap())
    .collect();
    for slack in [0, 1] {
        let feed = FeedConfig {
            feed_size: 5,
            slack,
            ..FeedConfig::default()
        };
        for seed in 80..83 {
            check_mixed(seed, shape, CHURN_MIX, feed.clone(), &digests);
        }
    }
}

/// Arrival order and epoch cuts: the lines a little out of order (blocks
/// moved a few places, as workers reading at different speeds deliver
/// them) and cut into small epochs, on one worker so that every cut is
/// the same on each run. In one epoch a follow can bring a story into a
/// digest's candidates and its delete or expiry take it out again, and a
/// block or unblock can meet the stories it hides: with slack 0 and 1 the
/// heads and digests are trimmed and refilled all the time, and must stay
/// exact however the stream is cut.
#[test]
fn arrival_order_and_epoch_cuts_keep_bounded_digests_exact() {
    for (mix, seed, cuts) in [(CHURN_MIX, 70, 0..40), (BLOCK_MIX, 71, 0..20)] {
        check_cuts(random_lines_mixed(seed, CHURN_SHAPE, mix), cuts);
    }
}

/// Each of `cuts` moves blocks of `in_order` and cuts epochs as seeded by
/// the cut, and checks the result against the reference model.
fn check_cuts(in_order: Vec<String>, cuts: std::ops::Range<u64>) {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    for cut in cuts {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(cut);
        let block = rng.gen_range(1..=60);
        let mut blocks: Vec<&[String]> = in_order.chunks(block).collect();
        for at in 0..blocks.len() {
            let to = (at + rng.gen_range(0..4)).min(blocks.len() - 1);
            blocks.swap(at, to);
        }
        let lines = blocks.concat();
        write_lines(&path, &lines);
        for (feed_size, slack) in [(5, 0), (20, 1)] {
            let feed = FeedConfig {
                feed_size,
                slack,
                ..FeedConfig::default()
            };
            let mut topology = file_topology(&path, false, feed, dir.path());
            topology.digests = vec![DigestConfig::default()];
            topology.notifications = NotificationsConfig::default();
            topology.input.epoch_events = rng.gen_range(1..=40);
            let (shown, _) = run_to_end(&topology, 1, &lines);
            let run = format!(
                "cut {cut}: blocks of {block}, epochs of {}, slack {slack}",
                topology.input.epoch_events
            );
            assert_shown(&run, &expected(&lines, &topology), &shown);
        }
    }
}
