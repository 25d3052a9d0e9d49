//! Digests and notification feeds over HTTP: paging, marking seen/read,
//! marks kept across a restart on the same store, and a group that gains a
//! newer activity becoming unseen again.

mod common;

use std::path::Path;

use common::redis_target::{self, Target};
use common::*;
use feedstorm::config::{EmbeddedSinkConfig, FeedConfig, SinkConfig, TopologyConfig};
use feedstorm::runtime::{RunOptions, Running};
use serde_json::{json, Value};

fn activity(id: &str, minute: i64, actor: &str, verb: &str, object: &str, target: &str) -> String {
    json!({"type": "activity", "id": id, "time": T0 + minute * 60_000, "actor": actor,
        "verb": verb, "object": object, "target": target})
    .to_string()
}

fn get(base: &str, path: &str) -> (u16, Value) {
    match ureq::get(&format!("{base}{path}")).call() {
        Ok(r) => (r.status(), r.into_json().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap()),
        Err(e) => panic!("{path}: {e}"),
    }
}

fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    match ureq::post(&format!("{base}{path}")).send_json(body) {
        Ok(r) => (r.status(), r.into_json().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap()),
        Err(e) => panic!("{path}: {e}"),
    }
}

fn topology(dir: &Path, events: &Path) -> TopologyConfig {
    let mut topology = file_topology(events, true, FeedConfig::default(), dir);
    topology.sink = SinkConfig::Embedded(EmbeddedSinkConfig {
        marks_path: Some(dir.join("marks.jsonl")),
    });
    topology
}

/// `(key, seen, read)` of each notification group, newest first.
fn flags(notifications: &Value) -> Vec<(String, bool, bool)> {
    notifications["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["key"].as_str().unwrap().to_owned(),
                g["seen"].as_bool().unwrap(),
                g["read"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn marks_survive_a_restart_and_a_newer_activity_makes_a_group_unseen() {
    marks_survive_a_restart(|_| {});
}

/// The same on Redis (scripts/servers.sh starts it): marks live in
/// `PREFIX:marks:{USER}`.
#[test]
#[cfg_attr(
    not(feature = "server-tests"),
    ignore = "needs the servers scripts/test.sh starts"
)]
fn marks_in_redis_survive_a_restart_and_a_newer_activity_makes_a_group_unseen() {
    marks_in_redis_survive_a_restart(redis_target::single());
}

#[test]
#[cfg_attr(
    not(feature = "server-tests"),
    ignore = "needs the servers scripts/test.sh starts"
)]
fn marks_in_a_redis_cluster_survive_a_restart_and_a_newer_activity_makes_a_group_unseen() {
    marks_in_redis_survive_a_restart(redis_target::cluster());
}

fn marks_in_redis_survive_a_restart(target: Target) {
    let prefix = target.prefix("marks");
    marks_survive_a_restart(|topology| topology.sink = SinkConfig::Redis(target.sink(&prefix)));
    let marks: std::collections::HashMap<String, String> = target.with(|c| {
        redis::cmd("HGETALL")
            .arg(format!("{prefix}:marks:{{user:travis}}"))
            .query(c)
            .unwrap()
    });
    assert_eq!(marks.len(), 3, "{marks:?}");
}

fn marks_survive_a_restart(sink: impl Fn(&mut TopologyConfig)) {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let lines = vec![
        activity("a1", -30, "user:rob", "love", "listing:bear", "user:travis"),
        activity("a2", -20, "user:ann", "love", "listing:bear", "user:travis"),
        // Ten minutes before UTC midnight, written in a +05:30 offset.
        json!({"type": "activity", "id": "a3", "time": "2026-11-21T05:20:00+05:30",
            "actor": "user:ann", "verb": "comment", "object": "listing:lamp",
            "target": "user:travis"})
        .to_string(),
        activity("a4", 10, "user:rob", "love", "listing:bear", "user:travis"),
        // The user's own activity notifies nobody.
        activity(
            "a5",
            12,
            "user:travis",
            "love",
            "listing:bear",
            "user:travis",
        ),
    ];
    write_lines(&events, &lines);
    let mut topology = topology(dir.path(), &events);
    sink(&mut topology);
    let travis = "/feeds/user:travis/notifications";

    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    let server = serve(&running, &topology, 100);
    let base = format!("http://{}", server.addr);
    wait_caught_up(&running, lines.len() as u64);
    let (code, before) = get(&base, travis);
    assert_eq!(code, 200, "{before}");
    // love/bear on the 21st (a4), comment/lamp on the 20th (a3), love/bear on the 20th (a1, a2).
    let keys: Vec<String> = flags(&before).into_iter().map(|f| f.0).collect();
    assert_eq!(
        keys,
        [
            "love/listing:bear/2026-11-21T00:00:00.000Z",
            "comment/listing:lamp/2026-11-20T00:00:00.000Z",
            "love/listing:bear/2026-11-20T00:00:00.000Z",
        ]
    );
    assert_eq!(
        (before["unseen"].as_u64(), before["unread"].as_u64()),
        (Some(3), Some(3))
    );
    let bear_20 = &before["groups"][2];
    assert_eq!(bear_20["actors"], json!(["user:ann", "user:rob"]));
    assert_eq!(bear_20["activity_ids"], json!(["a2", "a1"]));
    assert_eq!(bear_20["first_time"], "2026-11-20T23:30:00.000Z");
    assert_eq!(bear_20["last_time"], "2026-11-20T23:40:00.000Z");

    let (code, counts) = post(&base, &format!("{travis}/mark"), json!({"seen": true}));
    assert_eq!(code, 200, "{counts}");
    assert_eq!(
        (counts["unseen"].as_u64(), counts["unread"].as_u64()),
        (Some(0), Some(3))
    );
    let (_, counts) = post(
        &base,
        &format!("{travis}/mark"),
        json!({"read": [keys[2], "no-such-key"]}),
    );
    assert_eq!(
        (counts["unseen"].as_u64(), counts["unread"].as_u64()),
        (Some(0), Some(2))
    );
    let marked = flags(&get(&base, travis).1);
    drop(server);
    running.stop().unwrap();

    // Restart on the same marks file: the feeds are rebuilt from the spout,
    // the flags are kept.
    let running = Running::start(&topology, &RunOptions::threads(3)).unwrap();
    let server = serve(&running, &topology, 100);
    let base = format!("http://{}", server.addr);
    wait_caught_up(&running, lines.len() as u64);
    let (_, after) = get(&base, travis);
    assert_eq!(flags(&after), marked);
    assert_eq!(
        marked,
        [
            (keys[0].clone(), true, false),
            (keys[1].clone(), true, false),
            (keys[2].clone(), true, true),
        ]
    );

    // A newer activity in the read group: unseen and unread again, and first.
    append_lines(
        &events,
        &[activity(
            "a6",
            -5,
            "user:zed",
            "love",
            "listing:bear",
            "user:travis",
        )],
    );
    wait_caught_up(&running, lines.len() as u64 + 1);
    let (_, last) = get(&base, travis);
    assert_eq!(
        flags(&last),
        [
            (keys[0].clone(), true, false),
            (keys[2].clone(), false, false),
            (keys[1].clone(), true, false),
        ]
    );
    assert_eq!(
        (last["unseen"].as_u64(), last["unread"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(
        last["groups"][1]["actors"],
        json!(["user:zed", "user:ann", "user:rob"])
    );
    drop(server);
    running.stop().unwrap();
}

#[test]
fn digest_and_notification_pages_by_offset_and_cursor_agree() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    // 30 groups for user:kim's digest (follows herself): one per object, and
    // equal times in pairs, so that ties are broken by key.
    let mut lines = Vec::new();
    for i in 0..30 {
        let object = format!("listing:l{i:02}");
        lines.push(activity(
            &format!("a{i}"),
            i / 2,
            "user:kim",
            "post",
            &object,
            "user:joe",
        ));
    }
    write_lines(&events, &lines);
    let topology = topology(dir.path(), &events);
    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    let server = serve(&running, &topology, 100);
    let base = format!("http://{}", server.addr);
    wait_caught_up(&running, lines.len() as u64);

    for path in ["/feeds/user:kim/digest", "/feeds/user:joe/notifications"] {
        let (_, whole) = get(&base, &format!("{path}?limit=100"));
        let whole: Vec<Value> = whole["groups"].as_array().unwrap().clone();
        assert_eq!(whole.len(), 30, "{path}");
        // Newest first; equal times by key ascending.
        assert_eq!(whole[0]["key"], "post/listing:l28/2026-11-21T00:00:00.000Z");
        assert_eq!(whole[1]["key"], "post/listing:l29/2026-11-21T00:00:00.000Z");
        let (mut by_offset, mut by_cursor) = (Vec::new(), Vec::new());
        let mut cursor: Option<String> = None;
        for page in 0..4 {
            let (_, p) = get(&base, &format!("{path}?limit=8&offset={}", page * 8));
            by_offset.extend(p["groups"].as_array().unwrap().clone());
            let query = match &cursor {
                Some(c) => format!("{path}?limit=8&cursor={c}"),
                None => format!("{path}?limit=8"),
            };
            let (_, p) = get(&base, &query);
            by_cursor.extend(p["groups"].as_array().unwrap().clone());
            cursor = p["next_cursor"].as_str().map(str::to_owned);
            assert_eq!(cursor.is_none(), page == 3, "{path} page {page}");
        }
        assert_eq!(by_offset, whole, "{path}");
        assert_eq!(by_cursor, whole, "{path}");
    }

    let (code, body) = get(&base, "/feeds/user:kim/digest?name=nope");
    assert_eq!((code, body["error"].is_string()), (404, true));
    let (code, body) = get(&base, "/feeds/user:nobody/digest");
    assert_eq!((code, body["groups"].clone()), (200, json!([])));
    for bad in [json!({}), json!({"seen": "yes"}), json!({"bogus": true})] {
        let (code, body) = post(&base, "/feeds/user:joe/notifications/mark", bad.clone());
        assert!(code == 400 || code == 422, "{bad}: {code} {body}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
    drop(server);
    running.stop().unwrap();
}
