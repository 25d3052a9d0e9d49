//! Block and mute (SPEC section 2) against the reference model: seeded
//! random sequences with blocks and unblocks of people and things mixed in
//! (equal-time block/unblock pairs, blocks before the follows and after the
//! activities they hide), on 1, 2 and 4 workers. Feeds, digests,
//! notification feeds and rebuilds are read back over HTTP, as an app reads
//! them, and must equal the reference model.

mod common;

use common::judge::{self, head_over_http, Heads};
use common::*;
use feedstorm::config::{DigestConfig, FeedConfig, NotificationsConfig, NOTIFICATIONS};
use feedstorm::runtime::{RunOptions, Running};
use serde_json::Value;

/// The activity ids of `user`'s head in `heads` (none: empty).
fn head_ids(heads: &Heads, user: &str) -> Vec<String> {
    heads
        .get(user)
        .map(|head| head.iter().map(|e| e.id.clone()).collect())
        .unwrap_or_default()
}

/// `POST /drpc/rebuild-feed` for `user`: the rebuilt head's ids.
fn rebuilt_ids(base: &str, user: &str) -> Vec<String> {
    let rebuilt: Value = ureq::post(&format!("{base}/drpc/rebuild-feed"))
        .send_json(serde_json::json!({ "user": user }))
        .unwrap()
        .into_json()
        .unwrap();
    judge::entries_of_json(&rebuilt["entries"])
        .into_iter()
        .map(|e| e.id)
        .collect()
}

/// The lines without any block or unblock.
fn without_blocks(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| !l.contains("\"block\"") && !l.contains("\"unblock\""))
        .cloned()
        .collect()
}

fn check(seed: u64, shape: Shape, feed: FeedConfig) {
    let lines = random_lines_mixed(seed, shape, BLOCK_MIX);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    write_lines(&path, &lines);
    let mut topology = file_topology(&path, true, feed.clone(), dir.path());
    topology.digests = vec![DigestConfig::default()];
    topology.notifications = NotificationsConfig::default();
    let expected = expected(&lines, &topology);
    // The blocks must matter, or this test would pass without them.
    let unblocked = common::expected(&without_blocks(&lines), &topology);
    assert_ne!(
        unblocked.heads, expected.heads,
        "seed {seed}: blocks hide nothing"
    );
    assert_ne!(
        unblocked.digests[NOTIFICATIONS], expected.digests[NOTIFICATIONS],
        "seed {seed}: blocks hide no notification"
    );
    let users = judge::typed_ids(&lines);

    for workers in [1, 2, 4] {
        let running = Running::start(&topology, &RunOptions::threads(workers)).unwrap();
        wait_caught_up(&running, lines.len() as u64);
        let run = format!("seed {seed}, {workers} workers");
        // Feeds, digests and notifications over HTTP.
        assert_shown(
            &run,
            &expected,
            &read_over_http(&running, &topology, &lines),
        );
        // Rebuilds over HTTP.
        let server = serve(&running, &topology, 1_000);
        let base = format!("http://{}", server.addr);
        for user in &users {
            let want = head_ids(&expected.heads, user);
            assert_eq!(rebuilt_ids(&base, user), want, "{run}: rebuild of {user}");
        }
        drop(server);
        running.stop().unwrap();
    }
}

/// Few users, things and ids, many ties: blocks hit often.
const SMALL: Shape = Shape {
    events: 1_500,
    users: 10,
    things: 6,
    ids: 500,
    times: 120,
    spacing: 60_000,
};

/// Small heads and few ids: blocks and unblocks hit heads, digests and
/// notifications often, ties are many, and nearly every block leaves a head
/// short so that it refills from older stories.
#[test]
fn blocks_and_mutes_equal_the_reference_on_1_2_4_workers() {
    let shape = SMALL;
    for seed in 100..103 {
        check(
            seed,
            shape,
            FeedConfig {
                feed_size: 5,
                slack: 1,
                ..FeedConfig::default()
            },
        );
    }
}

/// Default heads over a larger sequence: blocks of users with many
/// followers, unblocks that bring back entries far down the feed.
#[test]
fn blocks_with_default_heads_equal_the_reference() {
    let shape = Shape {
        events: 6_000,
        users: 40,
        things: 20,
        ids: 2_500,
        times: 1_000,
        spacing: 1_000,
    };
    check(110, shape, FeedConfig::default());
}

/// In `active` mode a feed is built on its first read by the rebuild
/// query, which must honour blocks; a second batch (more blocks, unblocks
/// and activities) then changes the heads made live, which must stay exact.
#[test]
fn active_mode_rebuilds_and_live_heads_honour_blocks() {
    let shape = SMALL;
    let feed = FeedConfig {
        feed_size: 5,
        materialize: feedstorm::config::Materialize::Active,
        ..FeedConfig::default()
    };
    let first = random_lines_mixed(120, shape, BLOCK_MIX);
    // The second batch's activities get ids of their own (`b…`).
    let second: Vec<String> = random_lines_mixed(121, shape, BLOCK_MIX)
        .into_iter()
        .map(|line| line.replace("\"id\":\"a", "\"id\":\"b"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    write_lines(&path, &first);
    let topology = file_topology(&path, true, feed.clone(), dir.path());
    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    wait_caught_up(&running, first.len() as u64);
    let server = serve(&running, &topology, 1_000);
    let base = format!("http://{}", server.addr);
    let users: Vec<String> = (0..shape.users).map(|i| format!("user:user{i}")).collect();
    // Each user's feed read over HTTP equals the reference over `lines`.
    let assert_feeds = |lines: &[String], when: &str| {
        let expected = expected_heads(lines, &feed);
        for user in &users {
            let got = head_over_http(&base, user, 5);
            assert_eq!(
                got,
                expected.get(user).cloned().unwrap_or_default(),
                "{user} {when}"
            );
        }
    };
    assert_feeds(&first, "first read");
    append_lines(&path, &second);
    wait_caught_up(&running, (first.len() + second.len()) as u64);
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    // Live since the first read: the store's head, not a rebuild.
    assert_feeds(&all, "live");
    assert_eq!(running.status.drpc_mismatches(), 0);
    drop(server);
    running.stop().unwrap();
}

/// The reference model itself on a hand-written case: a block hides what
/// names the blocked id as actor or object (not as target), in the feed and
/// the notifications, and a later unblock brings it back; on equal times
/// the block wins.
#[test]
fn the_reference_hides_what_a_block_names() {
    let lines: Vec<String> = [
        r#"{"type":"follow","time":1,"user":"user:ann","interest":"user:bob"}"#,
        r#"{"type":"activity","id":"a1","time":2,"actor":"user:bob","verb":"love","object":"listing:l","target":"user:ann"}"#,
        r#"{"type":"activity","id":"a2","time":3,"actor":"user:bob","verb":"post","object":"user:bob"}"#,
        r#"{"type":"activity","id":"a3","time":4,"actor":"user:cat","verb":"love","object":"user:bob","target":"user:ann"}"#,
        r#"{"type":"activity","id":"a4","time":5,"actor":"user:cat","verb":"tag","object":"listing:m","target":"user:bob"}"#,
        r#"{"type":"follow","time":1,"user":"user:ann","interest":"user:cat"}"#,
        r#"{"type":"block","time":9,"user":"user:ann","blocked":"user:bob"}"#,
        r#"{"type":"unblock","time":9,"user":"user:ann","blocked":"user:bob"}"#,
        r#"{"type":"block","time":3,"user":"user:ann","blocked":"listing:m"}"#,
        r#"{"type":"unblock","time":4,"user":"user:ann","blocked":"listing:m"}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let feed = FeedConfig::default();
    let ann = "user:ann";
    let ids = |lines: &[String]| head_ids(&expected_heads(lines, &feed), ann);
    // Blocked (the block wins the tie): a1, a2 (bob acts) and a3 (bob is
    // the object) are hidden; a4 names bob only as its target.
    assert_eq!(ids(&lines), ["a4"]);
    let notifications = judge::reference::notifications(
        &judge::events(&lines),
        &judge::settings(&feed),
        &judge::notification_settings(&NotificationsConfig::default()),
    );
    assert!(!notifications.contains_key(ann), "a1 and a3 are hidden");
    let mut unblocked = lines.clone();
    unblocked
        .push(r#"{"type":"unblock","time":10,"user":"user:ann","blocked":"user:bob"}"#.to_string());
    assert_eq!(ids(&unblocked), ["a4", "a3", "a2", "a1"]);
}
