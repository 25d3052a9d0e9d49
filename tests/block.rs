//! Block and mute (SPEC section 2) against the reference model: seeded
//! random sequences with blocks and unblocks of people and things mixed in
//! (equal-time block/unblock pairs, blocks before the follows and after the
//! activities they hide), on 1, 2 and 4 workers. Feeds, digests,
//! notification feeds and rebuilds are read back over HTTP, as an app reads
//! them, and must equal the reference model.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use feedstorm::config::{DigestConfig, FeedConfig, NotificationsConfig};
use feedstorm::digest::{DigestSpec, Group};
use feedstorm::event::TypedId;
use feedstorm::feed::FeedKey;
use feedstorm::reference;
use feedstorm::runtime::{RunOptions, Running};
use serde_json::Value;

fn get(url: &str) -> Value {
    ureq::get(url).call().unwrap().into_json().unwrap()
}

fn ids(entries: &Value) -> Vec<String> {
    entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The activity ids of `user`'s head in the reference's `feeds` (none: empty).
fn head_ids(feeds: &BTreeMap<TypedId, Vec<FeedKey>>, user: &TypedId) -> Vec<String> {
    feeds
        .get(user)
        .map(|keys| keys.iter().map(|k| k.id.to_string()).collect())
        .unwrap_or_default()
}

fn encode(user: &TypedId) -> String {
    user.as_str().replace(':', "%3A")
}

/// What a group shows, as the HTTP answer and the reference both give it.
type Shown = (String, Vec<String>, u64, u64, Vec<String>);

fn shown_of_json(groups: &Value) -> Vec<Shown> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["key"].as_str().unwrap().to_owned(),
                strings(&g["actors"]),
                g["actor_count"].as_u64().unwrap(),
                g["activity_count"].as_u64().unwrap(),
                strings(&g["activity_ids"]),
            )
        })
        .collect()
}

fn shown_of_groups(groups: &[Group]) -> Vec<Shown> {
    groups
        .iter()
        .map(|g| {
            (
                g.key.to_string(),
                g.actors.iter().map(|a| a.as_str().to_owned()).collect(),
                g.actor_count as u64,
                g.activity_count as u64,
                g.activity_ids.iter().map(|id| id.to_string()).collect(),
            )
        })
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
    let events = decode_all(&lines);
    let expected = reference::feeds(&events, &feed);
    let spec = DigestSpec::new(&DigestConfig::default());
    let notifications = NotificationsConfig::default();
    let notification_spec = DigestSpec::notifications(&notifications);
    let expected_digests = reference::digests(&events, &feed, &spec);
    let expected_notifications = reference::notifications(&events, &feed, &notification_spec);
    // The blocks must matter, or this test would pass without them.
    let unblocked = decode_all(&without_blocks(&lines));
    assert_ne!(
        reference::feeds(&unblocked, &feed),
        expected,
        "seed {seed}: blocks hide nothing"
    );
    assert_ne!(
        reference::notifications(&unblocked, &feed, &notification_spec),
        expected_notifications,
        "seed {seed}: blocks hide no notification"
    );
    let users: BTreeSet<TypedId> = (0..shape.users)
        .map(|i| TypedId::parse(&format!("user:user{i}")).unwrap())
        .collect();

    for workers in [1, 2, 4] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        write_lines(&path, &lines);
        let mut topology = file_topology(&path, true, feed.clone(), dir.path());
        topology.digests = vec![DigestConfig::default()];
        topology.notifications = notifications.clone();
        let running = Running::start(&topology, &RunOptions::threads(workers)).unwrap();
        wait_caught_up(&running, lines.len() as u64);
        let server = serve(&running, &topology, 1_000);
        let base = format!("http://{}", server.addr);
        let run = format!("seed {seed}, {workers} workers");
        for user in &users {
            let want = head_ids(&expected, user);
            let limit = feed.feed_size;
            let live = get(&format!("{base}/feeds/{}?limit={limit}", encode(user)));
            assert_eq!(ids(&live["entries"]), want, "{run}: feed of {user}");
            let rebuilt: Value = ureq::post(&format!("{base}/drpc/rebuild-feed"))
                .send_json(serde_json::json!({ "user": user.as_str() }))
                .unwrap()
                .into_json()
                .unwrap();
            assert_eq!(ids(&rebuilt["entries"]), want, "{run}: rebuild of {user}");
            for (route, expected) in [
                ("digest", &expected_digests),
                ("notifications", &expected_notifications),
            ] {
                let url = format!("{base}/feeds/{}/{route}?limit=1000", encode(user));
                let got = shown_of_json(&get(&url)["groups"]);
                let want = expected
                    .get(user)
                    .map(|groups| shown_of_groups(groups))
                    .unwrap_or_default();
                assert_eq!(got, want, "{run}: {route} of {user}");
            }
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
    let users: Vec<TypedId> = (0..shape.users)
        .map(|i| TypedId::parse(&format!("user:user{i}")).unwrap())
        .collect();
    // Each user's feed read over HTTP equals the reference over `lines`.
    let assert_feeds = |lines: &[String], when: &str| {
        let expected = reference::feeds(&decode_all(lines), &feed);
        for user in &users {
            let url = format!("{base}/feeds/{}?limit=5", encode(user));
            let got = ids(&get(&url)["entries"]);
            assert_eq!(got, head_ids(&expected, user), "{user} {when}");
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
    let ann = TypedId::parse("user:ann").unwrap();
    let ids = |events: &[String]| head_ids(&reference::feeds(&decode_all(events), &feed), &ann);
    // Blocked (the block wins the tie): a1, a2 (bob acts) and a3 (bob is
    // the object) are hidden; a4 names bob only as its target.
    assert_eq!(ids(&lines), ["a4"]);
    let notifications: BTreeMap<_, _> = reference::notifications(
        &decode_all(&lines),
        &feed,
        &DigestSpec::notifications(&NotificationsConfig::default()),
    );
    assert!(!notifications.contains_key(&ann), "a1 and a3 are hidden");
    let mut unblocked = lines.clone();
    unblocked
        .push(r#"{"type":"unblock","time":10,"user":"user:ann","blocked":"user:bob"}"#.to_string());
    assert_eq!(ids(&unblocked), ["a4", "a3", "a2", "a1"]);
}
