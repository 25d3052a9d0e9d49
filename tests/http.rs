//! The HTTP API against a real server on 127.0.0.1:0, reading a followed file
//! that the test appends to while paging.

mod common;

use std::time::{Duration, Instant};

use common::*;
use feedstorm::config::FeedConfig;
use feedstorm::http::{Api, Server};
use feedstorm::runtime::{RunOptions, Running};
use serde_json::Value;

struct Fixture {
    base: String,
    path: std::path::PathBuf,
    running: Running,
    _server: Server,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn get(&self, path: &str) -> (u16, Value) {
        match ureq::get(&format!("{}{}", self.base, path)).call() {
            Ok(r) => (r.status(), r.into_json().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap()),
            Err(e) => panic!("{path}: {e}"),
        }
    }

    /// Appends lines and waits until the topology has read and written them.
    fn append(&self, lines: &[String]) {
        let before = self.running.status.events_in();
        append_lines(&self.path, lines);
        self.wait_for(before + lines.len() as u64);
    }

    fn wait_for(&self, events: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, status) = self.get("/status");
            if status["events_in"].as_u64() == Some(events)
                && status["caught_up"] == Value::Bool(true)
            {
                return;
            }
            assert!(Instant::now() < deadline, "not caught up: {status}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn activity(id: &str, minute: i64, actor: &str) -> String {
    serde_json::json!({"type": "activity", "id": id, "time": T0 + minute * 60_000,
        "actor": actor, "verb": "post", "object": "listing:lamp"})
    .to_string()
}

fn fixture(lines: &[String]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    write_lines(&path, lines);
    let topology = file_topology(&path, true, FeedConfig::default(), dir.path());
    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    let server = Server::start(
        "127.0.0.1:0".parse().unwrap(),
        Api::new(&running, &topology, 100),
    )
    .unwrap();
    let fixture = Fixture {
        base: format!("http://{}", server.addr),
        path,
        running,
        _server: server,
        _dir: dir,
    };
    fixture.wait_for(lines.len() as u64);
    fixture
}

fn ids(page: &Value) -> Vec<String> {
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn offset_and_cursor_paging_agree_and_cursors_survive_new_entries() {
    let mut lines = vec![
        r#"{"type":"follow","time":0,"user":"user:reader","interest":"listing:lamp"}"#.to_owned(),
    ];
    // 45 activities, some sharing a time (ties broken by id).
    lines.extend((0..45).map(|i| activity(&format!("a{i:02}"), i / 3, "user:writer")));
    let fx = fixture(&lines);

    // Offset pages.
    let mut by_offset = Vec::new();
    for offset in (0..45).step_by(10) {
        let (code, page) = fx.get(&format!("/feeds/user:reader?limit=10&offset={offset}"));
        assert_eq!(code, 200);
        by_offset.extend(ids(&page));
    }
    let mut expected: Vec<String> = (0..45).map(|i| format!("a{i:02}")).collect();
    expected.reverse(); // newest first; within a minute the larger id first
    assert_eq!(by_offset, expected);

    // Cursor pages, with new entries arriving at the head after the first page.
    let (_, first) = fx.get("/feeds/user:reader?limit=10");
    let mut by_cursor = ids(&first);
    let mut cursor = first["next_cursor"].as_str().unwrap().to_owned();
    fx.append(&[
        activity("new1", 100, "user:writer"),
        activity("new2", 101, "user:writer"),
    ]);
    loop {
        let (code, page) = fx.get(&format!("/feeds/user%3Areader?limit=10&cursor={cursor}"));
        assert_eq!(code, 200);
        by_cursor.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(
        by_cursor, expected,
        "cursor paging skipped or repeated entries"
    );

    // The new entries are at the head; offset paging has shifted by two.
    let (_, head) = fx.get("/feeds/user:reader?limit=3");
    assert_eq!(ids(&head), vec!["new2", "new1", "a44"]);
    let entry = &head["entries"][0];
    assert_eq!(entry["time"], "2026-11-21T01:41:00.000Z");
    assert_eq!(entry["actor"], "user:writer");
    assert_eq!(entry["target"], Value::Null);
}

#[test]
fn bad_parameters_are_400_with_an_error_and_unknown_users_are_empty() {
    let fx = fixture(&[activity("a1", 0, "user:writer")]);
    for bad in [
        "/feeds/user:writer?limit=0",
        "/feeds/user:writer?limit=101",
        "/feeds/user:writer?limit=ten",
        "/feeds/user:writer?offset=-1",
        "/feeds/user:writer?cursor=%%%",
        "/feeds/user:writer?cursor=bm90LWEta2V5",
        "/feeds/user:writer?offset=1&cursor=MTphMQ",
        "/feeds/writer",
    ] {
        let (code, body) = fx.get(bad);
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{bad}: {body}"
        );
    }
    let (code, body) = fx.get("/feeds/user:nobody");
    assert_eq!(code, 200);
    assert_eq!(body["entries"], serde_json::json!([]));
    assert_eq!(body["next_cursor"], Value::Null);
    let (code, body) = fx.get("/feeds/user:writer");
    assert_eq!((code, ids(&body)), (200, vec!["a1".to_owned()]));
    let (code, _) = fx.get("/nope");
    assert_eq!(code, 404);
    let (code, health) = fx.get("/health");
    assert_eq!((code, health["status"].as_str()), (200, Some("ok")));
    let metrics = ureq::get(&format!("{}/metrics", fx.base))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains("feedstorm_events_in_total 1\n"),
        "{metrics}"
    );
}
