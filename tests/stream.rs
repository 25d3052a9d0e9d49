//! `GET /feeds/USER/stream`: Server-Sent Events read the way an app reads
//! them (plain HTTP, the events parsed here), replayed onto their snapshot,
//! end equal to the reference model's head; a client that stops reading is
//! cut off with a final `reread` event while the topology goes on.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Shape, T0};
use feedstorm::config::FeedConfig;
use feedstorm::runtime::{RunOptions, Running};
use serde_json::Value;

/// One server-sent event: its name and data.
type Sse = (String, Value);

/// Reads `user`'s stream on a thread of its own; its events arrive on the
/// returned channel.
fn subscribe(addr: &str, user: &str, limit: usize) -> mpsc::Receiver<Sse> {
    let (events, received) = mpsc::channel();
    let url = format!("http://{addr}/feeds/{user}/stream?limit={limit}");
    std::thread::spawn(move || {
        let answer = ureq::get(&url).call().unwrap();
        assert_eq!(answer.content_type(), "text/event-stream");
        let (mut name, mut data) = (String::new(), String::new());
        for line in BufReader::new(answer.into_reader()).lines() {
            let Ok(line) = line else { return };
            if let Some(value) = line.strip_prefix("event: ").or(line.strip_prefix("event:")) {
                name = value.trim().to_owned();
            } else if let Some(value) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                data.push_str(value);
            } else if line.is_empty() && !data.is_empty() {
                let value = serde_json::from_str(&data).unwrap();
                if events.send((std::mem::take(&mut name), value)).is_err() {
                    return;
                }
                data.clear();
            }
        }
    });
    received
}

/// RFC 3339 as the API writes it, to milliseconds (parsed here, not by the product).
fn millis(time: &Value) -> i64 {
    let parsed = time::OffsetDateTime::parse(
        time.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    (parsed.unix_timestamp_nanos() / 1_000_000) as i64
}

/// A client's view of a stream: entries by (time, id), from the snapshot
/// and every add and remove since.
#[derive(Default)]
struct Replayed {
    entries: BTreeMap<(i64, String), ()>,
    snapshots: usize,
    full_adds: usize,
}

impl Replayed {
    fn apply(&mut self, (name, data): Sse) {
        let key = |entry: &Value| {
            (
                millis(&entry["time"]),
                entry["id"].as_str().unwrap().to_owned(),
            )
        };
        match name.as_str() {
            "snapshot" => {
                self.snapshots += 1;
                self.entries = data["entries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| (key(e), ()))
                    .collect();
            }
            "add" => {
                // The whole entry, unless its activity was already deleted
                // or expired by a later epoch (whose remove follows).
                if data["entry"]["verb"].is_string() {
                    self.full_adds += 1;
                }
                self.entries.insert(key(&data["entry"]), ());
            }
            "remove" => {
                self.entries.remove(&key(&data["entry"]));
            }
            other => panic!("unexpected event {other}: {data}"),
        }
    }

    /// Newest first.
    fn ids(&self) -> Vec<String> {
        self.entries
            .keys()
            .rev()
            .map(|(_, id)| id.clone())
            .collect()
    }
}

#[test]
fn streams_replayed_onto_their_snapshots_equal_the_reference() {
    let shape = Shape {
        events: 1_500,
        users: 8,
        things: 6,
        ids: 400,
        times: 300,
        spacing: 60_000,
    };
    let lines = common::random_lines(21, shape);
    let feed = FeedConfig {
        feed_size: 12,
        ..FeedConfig::default()
    };
    let expected = common::expected_heads(&lines, &feed);
    // A few of the busiest users, and one who never appears.
    let mut users: Vec<&String> = expected.keys().collect();
    users.sort_by_key(|u| std::cmp::Reverse(expected[*u].len()));
    let mut users: Vec<String> = users.iter().take(5).map(|u| u.to_string()).collect();
    users.push("user:nobody".to_owned());
    for workers in [1, 2, 4] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let first = lines.len() / 4;
        common::write_lines(&path, &lines[..first]);
        let mut topology = common::file_topology(&path, true, feed.clone(), dir.path());
        topology.input.epoch_events = 17;
        let running = Running::start(&topology, &RunOptions::threads(workers)).unwrap();
        let server = common::serve(&running, &topology, 1000);
        let addr = server.addr.to_string();
        common::wait_caught_up(&running, first as u64);

        // Two windows per user: the first 3 entries, and the whole head.
        let streams: Vec<(String, usize, mpsc::Receiver<Sse>)> = users
            .iter()
            .flat_map(|u| [3, feed.feed_size].map(|limit| (u.clone(), limit)))
            .map(|(user, limit)| {
                let events = subscribe(&addr, &user, limit);
                (user, limit, events)
            })
            .collect();
        let mut replayed: Vec<Replayed> = streams.iter().map(|_| Replayed::default()).collect();
        for ((_, _, events), view) in streams.iter().zip(&mut replayed) {
            view.apply(
                events
                    .recv_timeout(Duration::from_secs(30))
                    .expect("a snapshot"),
            );
            assert_eq!(view.snapshots, 1);
        }
        for chunk in lines[first..].chunks(200) {
            common::append_lines(&path, chunk);
        }
        common::wait_caught_up(&running, lines.len() as u64);

        for ((user, limit, events), view) in streams.iter().zip(&mut replayed) {
            let want: Vec<String> = expected
                .get(user)
                .map(|head| head.iter().take(*limit).map(|e| e.id.clone()).collect())
                .unwrap_or_default();
            let deadline = Instant::now() + Duration::from_secs(30);
            while view.ids() != want {
                let left = deadline.saturating_duration_since(Instant::now());
                match events.recv_timeout(left) {
                    Ok(event) => view.apply(event),
                    Err(_) => panic!(
                        "{user} limit {limit} on {workers} workers: replayed {:?}, reference {want:?}",
                        view.ids()
                    ),
                }
            }
        }
        let full_adds: usize = replayed.iter().map(|r| r.full_adds).sum();
        assert!(full_adds > 0, "no add carried its entry");
        let status: Value = ureq::get(&format!("http://{addr}/status"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        assert_eq!(status["push"]["streams_open"], streams.len());
        assert!(status["push"]["events"].as_u64().unwrap() > 0, "{status}");
        drop(streams);
        running.stop().unwrap();
        drop(server);
    }
}

#[test]
fn a_client_that_stops_reading_is_cut_off_and_the_topology_goes_on() {
    // One actor, followed by the reader, posts 30,000 times: every epoch
    // moves the reader's whole first page.
    let mut lines = vec![format!(
        r#"{{"type":"follow","time":{T0},"user":"user:reader","interest":"user:star"}}"#
    )];
    for i in 0..30_000 {
        lines.push(format!(
            r#"{{"type":"activity","id":"a{i:06}","time":{},"actor":"user:star","verb":"post","object":"note:n{i}","extra":{{"pad":"{}"}}}}"#,
            T0 + 1 + i,
            "x".repeat(200)
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    common::write_lines(&path, &lines[..1]);
    let feed = FeedConfig {
        feed_size: 100,
        ..FeedConfig::default()
    };
    let mut topology = common::file_topology(&path, true, feed, dir.path());
    topology.input.epoch_events = 40;
    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    let server = common::serve(&running, &topology, 1000);
    common::wait_caught_up(&running, 1);

    // A client that asks and then never reads.
    let mut socket = TcpStream::connect(server.addr).unwrap();
    write!(
        socket,
        "GET /feeds/user:reader/stream?limit=100 HTTP/1.1\r\nHost: feedstorm\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let open = || -> Value {
        ureq::get(&format!("http://{}/status", server.addr))
            .call()
            .unwrap()
            .into_json()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while open()["push"]["streams_open"] != 1 {
        assert!(Instant::now() < deadline, "the stream did not open");
        std::thread::sleep(Duration::from_millis(10));
    }
    common::append_lines(&path, &lines[1..]);
    // The topology catches up although the client reads nothing.
    common::wait_caught_up(&running, lines.len() as u64);
    let push = open()["push"].clone();
    assert_eq!(push["streams_cut_off"], 1, "{push}");
    assert_eq!(push["streams_open"], 0, "{push}");

    // What the client finds when it reads again: what fitted in the
    // buffers, then the final event telling it to read the feed again.
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut received = Vec::new();
    socket.read_to_end(&mut received).unwrap();
    let text = String::from_utf8_lossy(&received);
    let last = text.rfind("event: ").map(|at| &text[at..]).unwrap_or("");
    assert!(
        last.starts_with("event: reread"),
        "the stream ended with {last:.200}"
    );
    assert!(text.contains("event: snapshot"));
    // Bounded: far less than the 30,000 adds and removes the epochs made.
    assert!(received.len() < 60 << 20, "{} bytes", received.len());
    running.stop().unwrap();
}
