//! Rebuild-feed through the running dataflow: answers equal the live heads
//! and the reference model, on 1, 2 and 4 workers, also while events keep
//! arriving; many requests at once; active-only materialization.

mod common;

use std::time::{Duration, Instant};

use common::judge::{path_of, Heads};
use common::*;
use feedstorm::config::{FeedConfig, Materialize};
use feedstorm::http::Server;
use feedstorm::runtime::{RunOptions, Running};
use serde_json::Value;

/// The same workload shape with activity ids of its own (`b…`), so that two
/// batches never give one id two contents.
fn second_batch(seed: u64, shape: Shape) -> Vec<String> {
    random_lines(seed, shape)
        .into_iter()
        .map(|line| {
            let mut v: Value = serde_json::from_str(&line).unwrap();
            if let Some(id) = v.get("id").and_then(Value::as_str) {
                v["id"] = Value::from(format!("b{}", &id[1..]));
            }
            v.to_string()
        })
        .collect()
}

fn users_of(expected: &Heads) -> Vec<String> {
    let mut users: Vec<String> = expected.keys().cloned().collect();
    users.push("user:never-seen".to_owned());
    users
}

/// The ids of `user`'s head in `expected` (none: empty).
fn want(expected: &Heads, user: &str) -> Vec<String> {
    expected
        .get(user)
        .map(|head| head.iter().map(|e| e.id.clone()).collect())
        .unwrap_or_default()
}

/// An app's view of a topology's HTTP API.
struct App {
    base: String,
}

impl App {
    fn of(server: &Server) -> App {
        App {
            base: format!("http://{}", server.addr),
        }
    }

    /// `GET /feeds/USER`: the head's ids.
    fn head(&self, user: &str) -> Vec<String> {
        let url = format!("{}/feeds/{}?limit=1000", self.base, path_of(user));
        ids_of(&ureq::get(&url).call().unwrap().into_json().unwrap())
    }

    /// `POST /drpc/rebuild-feed`: the rebuilt head's ids.
    fn rebuild(&self, user: &str) -> Vec<String> {
        let url = format!("{}/drpc/rebuild-feed", self.base);
        let body: Value = ureq::post(&url)
            .send_json(serde_json::json!({ "user": user }))
            .unwrap()
            .into_json()
            .unwrap();
        ids_of(&body)
    }

    /// `GET /status`.
    fn status(&self) -> Value {
        let url = format!("{}/status", self.base);
        ureq::get(&url).call().unwrap().into_json().unwrap()
    }
}

#[test]
fn rebuild_equals_live_feed_and_reference_on_1_2_4_workers() {
    let shape = Shape {
        events: 2_000,
        users: 30,
        things: 20,
        ids: 800,
        times: 300,
        spacing: 1_000,
    };
    let feed = FeedConfig {
        feed_size: 10,
        ..FeedConfig::default()
    };
    for workers in [1, 2, 4] {
        let first = random_lines(50 + workers as u64, shape);
        let (running, server, _dir, path) = served(feed.clone(), &first, workers);
        let app = App::of(&server);

        let expected = expected_heads(&first, &feed);
        for user in users_of(&expected) {
            let want = want(&expected, &user);
            assert_eq!(
                app.rebuild(&user),
                want,
                "{workers} workers: rebuild of {user} differs from the reference"
            );
            assert_eq!(app.head(&user), want, "live head of {user}");
        }

        // While a second batch streams in, every answer must equal the live
        // head at the answer's own epoch (the bolt counts any difference).
        let second = second_batch(90 + workers as u64, shape);
        let appender = {
            let (path, second) = (path.clone(), second.clone());
            std::thread::spawn(move || {
                for chunk in second.chunks(50) {
                    append_lines(&path, chunk);
                    std::thread::yield_now();
                }
            })
        };
        let users = users_of(&expected);
        let mut answered = 0;
        while !appender.is_finished() || answered < 50 {
            app.rebuild(&users[answered % users.len()]);
            answered += 1;
        }
        appender.join().unwrap();
        wait_caught_up(&running, (first.len() + second.len()) as u64);
        assert_eq!(
            app.status()["drpc_mismatches"],
            0,
            "a rebuild differed from the live head at its epoch"
        );

        let all: Vec<String> = first.iter().chain(&second).cloned().collect();
        let expected = expected_heads(&all, &feed);
        for user in users_of(&expected) {
            assert_eq!(
                app.rebuild(&user),
                want(&expected, &user),
                "{user} after the stream"
            );
        }
        drop(server);
        running.stop().unwrap();
    }
}

fn served(
    feed: FeedConfig,
    lines: &[String],
    workers: usize,
) -> (Running, Server, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    write_lines(&path, lines);
    let topology = file_topology(&path, true, feed, dir.path());
    let running = Running::start(&topology, &RunOptions::threads(workers)).unwrap();
    let server = serve(&running, &topology, 1_000);
    wait_caught_up(&running, lines.len() as u64);
    (running, server, dir, path)
}

fn ids_of(body: &Value) -> Vec<String> {
    body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn two_hundred_concurrent_rebuild_requests_get_right_answers() {
    let shape = Shape {
        events: 3_000,
        users: 50,
        things: 30,
        ids: 1_200,
        times: 500,
        spacing: 1_000,
    };
    let feed = FeedConfig::default();
    let lines = random_lines(77, shape);
    let expected = expected_heads(&lines, &feed);
    let (running, server, _dir, _) = served(feed, &lines, 2);
    let users = users_of(&expected);
    let url = format!("http://{}/drpc/rebuild-feed", server.addr);
    let requests: Vec<_> = (0..200)
        .map(|i| {
            let (url, user) = (url.clone(), users[i % users.len()].clone());
            std::thread::spawn(move || {
                let body: Value = ureq::post(&url)
                    .send_json(serde_json::json!({ "user": user }))
                    .unwrap()
                    .into_json()
                    .unwrap();
                (user, ids_of(&body))
            })
        })
        .collect();
    let mut right = 0;
    for request in requests {
        let (user, ids) = request.join().unwrap();
        assert_eq!(ids, want(&expected, &user), "{user}");
        right += 1;
    }
    assert_eq!(right, 200);
    running.stop().unwrap();
}

#[test]
fn active_mode_rebuilds_on_read_and_keeps_read_feeds_live() {
    let shape = Shape {
        events: 2_500,
        users: 40,
        things: 25,
        ids: 1_000,
        times: 400,
        spacing: 1_000,
    };
    let feed = FeedConfig {
        feed_size: 15,
        materialize: Materialize::Active,
        ..FeedConfig::default()
    };
    let lines = random_lines(88, shape);
    let expected = expected_heads(&lines, &feed);
    let (running, server, _dir, path) = served(feed.clone(), &lines, 2);
    let app = App::of(&server);
    // `/status` counts the store's entries about once a second.
    let materialized = || app.status()["store"]["entries"].as_u64().unwrap();
    let counted = |want: u64, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while materialized() != want {
            assert!(
                Instant::now() < deadline,
                "{what}: {} entries materialized, not {want}",
                materialized()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    counted(0, "nobody read a feed: nothing is materialized");

    let readers: Vec<String> = expected.keys().take(5).cloned().collect();
    let mut read_entries = 0;
    for user in &readers {
        let head = want(&expected, user);
        assert_eq!(app.head(user), head, "first read of {user} (rebuilt)");
        read_entries += head.len() as u64;
        counted(read_entries, &format!("{user} is live after the read"));
    }
    // Live maintenance resumes for the readers only.
    let second = second_batch(89, shape);
    append_lines(&path, &second);
    wait_caught_up(&running, (lines.len() + second.len()) as u64);
    let all: Vec<String> = lines.iter().chain(&second).cloned().collect();
    let expected = expected_heads(&all, &feed);
    let mut live_entries = 0;
    for user in &readers {
        let head = want(&expected, user);
        assert_eq!(
            app.head(user),
            head,
            "live head of {user} after more events"
        );
        live_entries += head.len() as u64;
    }
    counted(
        live_entries,
        "only the readers' heads are materialized, and kept live",
    );
    // Someone who never read gets the right feed on first read too.
    let late = expected.keys().nth(7).unwrap();
    assert_eq!(app.head(late), want(&expected, late));
    assert_eq!(app.status()["drpc_mismatches"], 0);
    running.stop().unwrap();
}

#[test]
fn a_rebuild_that_cannot_be_answered_in_time_is_a_clear_error() {
    let lines = random_lines(
        5,
        Shape {
            events: 50,
            users: 3,
            things: 3,
            ids: 20,
            times: 5,
            spacing: 1_000,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    write_lines(&path, &lines);
    let mut topology = file_topology(&path, true, FeedConfig::default(), dir.path());
    topology.drpc.timeout = Duration::from_millis(300);
    let running = Running::start(&topology, &RunOptions::threads(1)).unwrap();
    let server = serve(&running, &topology, 100);
    let url = format!("http://{}/drpc/rebuild-feed", server.addr);
    wait_caught_up(&running, lines.len() as u64);
    assert!(ureq::post(&url)
        .send_json(serde_json::json!({"user": "user:user0"}))
        .is_ok());
    match ureq::post(&url).send_json(serde_json::json!({"user": "rob"})) {
        Err(ureq::Error::Status(400, _)) => {}
        other => panic!("expected 400, got {other:?}"),
    }
    // With the workers gone nothing can answer: the caller gets an error, not a hang.
    running.stop().unwrap();
    let started = Instant::now();
    match ureq::post(&url).send_json(serde_json::json!({"user": "user:user0"})) {
        Err(ureq::Error::Status(504, response)) => {
            let body: Value = response.into_json().unwrap();
            assert!(
                body["error"].as_str().unwrap().contains("timed out"),
                "{body}"
            );
        }
        other => panic!("expected 504, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}
