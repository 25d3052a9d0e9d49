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
    token: Option<String>,
    path: std::path::PathBuf,
    running: Running,
    _server: Server,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// `/status`, with the token when one is set.
    fn status(&self) -> Value {
        let mut request = ureq::get(&format!("{}/status", self.base));
        if let Some(token) = &self.token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        request.call().unwrap().into_json().unwrap()
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.call(ureq::get(&format!("{}{}", self.base, path)), None)
    }

    /// Any request: the status and the JSON body every answer has.
    fn call(&self, request: ureq::Request, body: Option<&[u8]>) -> (u16, Value) {
        let sent = match body {
            Some(body) => request.send_bytes(body),
            None => request.call(),
        };
        let (code, response) = match sent {
            Ok(r) => (r.status(), r),
            Err(ureq::Error::Status(code, r)) => (code, r),
            Err(e) => panic!("{e}"),
        };
        let text = response.into_string().unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{code}: not JSON ({e}): {text:?}"));
        (code, body)
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
            let status = self.status();
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
    fixture_with_token(lines, None)
}

fn fixture_with_token(lines: &[String], token: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    write_lines(&path, lines);
    let topology = file_topology(&path, true, FeedConfig::default(), dir.path());
    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    let server = Server::start(
        "127.0.0.1:0".parse().unwrap(),
        Api::new(&running, &topology, 100).with_token(token.map(str::to_owned)),
    )
    .unwrap();
    let fixture = Fixture {
        base: format!("http://{}", server.addr),
        token: token.map(str::to_owned),
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

/// With a token, every route but /health and /ready needs it: 401 with a
/// JSON error without it or with a wrong one, 200 with it.
#[test]
fn a_token_guards_every_route_but_the_probes() {
    let fx = fixture_with_token(&[activity("a1", 0, "user:writer")], Some("s3cret"));
    let url = |path: &str| format!("{}{}", fx.base, path);
    for path in [
        "/feeds/user:writer",
        "/status",
        "/metrics",
        "/api/v1/topology",
    ] {
        let (code, body) = fx.call(ureq::get(&url(path)), None);
        assert_eq!(code, 401, "{path} without the token: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
        let wrong = ureq::get(&url(path)).set("Authorization", "Bearer s3creT");
        assert_eq!(fx.call(wrong, None).0, 401, "{path} with a wrong token");
        let right = ureq::get(&url(path)).set("Authorization", "Bearer s3cret");
        let answer = right.call().unwrap();
        assert_eq!(answer.status(), 200, "{path} with the token");
    }
    let rebuild = ureq::post(&url("/drpc/rebuild-feed"));
    let (code, _) = fx.call(rebuild, Some(br#"{"user":"user:writer"}"#));
    assert_eq!(code, 401);
    for probe in ["/health", "/ready"] {
        let (code, body) = fx.get(probe);
        assert_eq!(code, 200, "{probe} needs no token: {body}");
    }
}

/// Every error is JSON: unknown routes, wrong methods, oversize bodies,
/// request targets and headers, too many mark keys.
#[test]
fn oversize_and_wrong_requests_get_json_errors() {
    let fx = fixture(&[activity("a1", 0, "user:writer")]);
    let url = |path: &str| format!("{}{}", fx.base, path);
    let mut cases: Vec<(&str, u16, ureq::Request, Option<Vec<u8>>)> = vec![
        ("unknown route", 404, ureq::get(&url("/nope")), None),
        (
            "wrong method",
            405,
            ureq::delete(&url("/feeds/user:writer")),
            None,
        ),
        (
            "body over 64 KiB",
            413,
            ureq::post(&url("/drpc/rebuild-feed")).set("Content-Type", "application/json"),
            Some(format!(r#"{{"user":"user:{}"}}"#, "x".repeat(100 << 10)).into_bytes()),
        ),
    ];
    let keys: Vec<String> = (0..1_001).map(|i| format!("k{i}")).collect();
    cases.push((
        "1,001 mark keys",
        413,
        ureq::post(&url("/feeds/user:writer/notifications/mark"))
            .set("Content-Type", "application/json"),
        Some(serde_json::to_vec(&serde_json::json!({ "seen": keys })).unwrap()),
    ));
    // Over a plain socket, as a hostile client sends them: a target over
    // the cap, and one over what hyper itself reads (64 KiB).
    for kb in [50, 100] {
        let target = format!("/feeds/user:writer?cursor={}", "x".repeat(kb << 10));
        let (code, answer) = raw_get(&fx.base, &target, "");
        assert_eq!(code, 414, "{kb} KB request target: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| e.contains("8192")),
            "{kb} KB: {answer}"
        );
    }
    let padding = format!("X-Padding: {}\r\n", "x".repeat(32 << 10));
    let (code, answer) = raw_get(&fx.base, "/feeds/user:writer", &padding);
    assert_eq!(code, 431, "32 KiB of headers: {answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("16384")),
        "{answer}"
    );
    for (what, want, request, body) in cases {
        let (code, answer) = fx.call(request, body.as_deref());
        assert_eq!(code, want, "{what}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {answer}"
        );
    }
}

/// A GET over a plain socket: the status and the JSON body.
fn raw_get(base: &str, target: &str, headers: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let code = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A client that sends half a request is disconnected (after the header
/// deadline) instead of holding its connection open for ever.
#[test]
fn a_half_sent_request_is_disconnected() {
    use std::io::{Read, Write};
    let fx = fixture(&[activity("a1", 0, "user:writer")]);
    let addr = fx.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /feeds/user:writer HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    assert!(
        read.is_ok() && started.elapsed() < Duration::from_secs(25),
        "still open after {:?}: {read:?}",
        started.elapsed()
    );
}
