//! A file with malformed lines is processed to the end: each bad line is
//! counted and dead-lettered with its line number, and the good events'
//! feeds are exactly the reference model's.

mod common;

use common::*;
use feedstorm::config::FeedConfig;

#[test]
fn malformed_lines_are_dead_lettered_and_good_events_still_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut lines = random_lines(
        7,
        Shape {
            events: 400,
            users: 6,
            things: 5,
            ids: 120,
            times: 30,
            spacing: 60_000,
        },
    );
    let oversize = format!(
        r#"{{"type":"activity","id":"big","time":1,"actor":"user:x","verb":"v","object":"a:b","extra":{{"pad":"{}"}}}}"#,
        "x".repeat(2_000)
    );
    let bad = [
        "not json at all".to_owned(),
        r#"{"type":"poke","time":1}"#.to_owned(),
        r#"{"type":"follow","time":"noon","user":"user:u0","interest":"user:u1"}"#.to_owned(),
        r#"{"type":"activity","id":7,"time":1,"actor":"user:u0","verb":"v","object":"a:b"}"#
            .to_owned(),
        r#"{"type":"activity","id":"x","time":1,"actor":"nobody","verb":"v","object":"a:b"}"#
            .to_owned(),
        r#"{"type":"delete","time":1}"#.to_owned(),
        oversize,
    ];
    // Scatter the bad lines; remember their 1-based line numbers.
    let mut bad_lines = Vec::new();
    for (i, line) in bad.iter().enumerate() {
        let at = 10 + i * 50;
        lines.insert(at, line.clone());
        bad_lines.push(at as u64 + 1);
    }
    lines.insert(5, String::new()); // blank lines are skipped, not bad
    for n in bad_lines.iter_mut() {
        *n += 1;
    }
    write_lines(&path, &lines);

    let feed = FeedConfig {
        feed_size: 5,
        ..FeedConfig::default()
    };
    let mut topology = file_topology(&path, false, feed.clone(), dir.path());
    topology.input.max_event_bytes = 1_024;
    for workers in [1, 3] {
        let _ = std::fs::remove_file(&topology.dead_letter.path);
        let (shown, status) = run_to_end(&topology, workers, &lines);
        assert_eq!(status.events_bad(), bad.len() as u64);
        assert_eq!(status.events_in(), lines.len() as u64 - 1);

        let letters = std::fs::read_to_string(&topology.dead_letter.path).unwrap();
        let mut found: Vec<(u64, String)> = letters
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert!(!v["error"].as_str().unwrap().is_empty());
                (
                    v["position"]["line"]["line"].as_u64().unwrap(),
                    v["raw"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        found.sort();
        // An oversize line is kept up to max_event_bytes; its number finds the rest.
        let expected: Vec<(u64, String)> = bad_lines
            .iter()
            .copied()
            .zip(bad.iter().map(|l| l[..l.len().min(1_024)].to_owned()))
            .collect();
        assert_eq!(found, expected, "dead letters with their line numbers");

        let good: Vec<String> = lines.iter().filter(|l| !bad.contains(l)).cloned().collect();
        assert_same("feeds", &expected_heads(&good, &feed), &shown.heads);
    }
}

/// A follow and ten activities, then hostile lines around them.
fn ten_activity_feed(extra_lines: &[String]) -> Vec<String> {
    let mut lines = vec![format!(
        r#"{{"type":"follow","time":{T0},"user":"user:f","interest":"user:a"}}"#
    )];
    for i in 1..=10 {
        lines.push(format!(
            r#"{{"type":"activity","id":"a{i}","time":{},"actor":"user:a","verb":"post","object":"listing:l{i}"}}"#,
            T0 + i * 1_000
        ));
    }
    lines.extend(extra_lines.iter().cloned());
    lines
}

fn feed_ids(shown: &Shown, user: &str) -> Vec<String> {
    shown
        .heads
        .get(user)
        .map(|head| head.iter().map(|e| e.id.clone()).collect())
        .unwrap_or_default()
}

/// One event can no longer erase every feed: times beyond `max_future`
/// ahead of the clock (as integer milliseconds or RFC 3339) are bad events
/// and move nothing; the follower's ten-activity feed survives them.
#[test]
fn a_time_far_ahead_of_the_clock_is_bad_and_forgets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let hostile = [i64::MAX.to_string(), r#""9999-12-31T23:59:59Z""#.to_owned()].map(|time| {
        format!(
            r#"{{"type":"activity","id":"late-{}","time":{time},"actor":"user:a","verb":"post","object":"listing:x"}}"#,
            time.len()
        )
    });
    let lines = ten_activity_feed(&hostile);
    write_lines(&path, &lines);
    let topology = file_topology(&path, false, FeedConfig::default(), dir.path());
    for workers in [1, 2] {
        let (shown, status) = run_to_end(&topology, workers, &lines);
        assert_eq!(status.events_bad(), 2, "both far-future events are bad");
        let want: Vec<String> = (1..=10).rev().map(|i| format!("a{i}")).collect();
        assert_eq!(feed_ids(&shown, "user:f"), want);
        let letters = std::fs::read_to_string(&topology.dead_letter.path).unwrap();
        assert!(letters.contains("max_future"), "{letters}");
    }
}

/// `extra` nested beyond the bound is bad at ingest; what is accepted is
/// served back verbatim (duplicate keys and all).
#[test]
fn deep_extra_is_bad_and_accepted_extra_is_served_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let nested = |depth: usize| format!("{}1{}", r#"{"k":"#.repeat(depth), "}".repeat(depth));
    let activity = |id: &str, extra: &str| {
        format!(
            r#"{{"type":"activity","id":"{id}","time":{},"actor":"user:a","verb":"post","object":"listing:x","extra":{extra}}}"#,
            T0 + 60_000
        )
    };
    let kept = nested(60);
    let duplicates = r#"{"k":1,"k":2,"k":3}"#;
    write_lines(
        &path,
        &ten_activity_feed(&[
            activity("deep", &nested(200)),
            activity("kept", &kept),
            activity("dupes", duplicates),
        ]),
    );
    let topology = file_topology(&path, false, FeedConfig::default(), dir.path());
    let running =
        feedstorm::runtime::Running::start(&topology, &feedstorm::runtime::RunOptions::threads(2))
            .unwrap();
    wait_caught_up(&running, 14);
    assert_eq!(
        running.status.events_bad(),
        1,
        "only the 200-deep extra is bad"
    );
    let server = serve(&running, &topology, 100);
    let body = ureq::get(&format!("http://{}/feeds/user:f?limit=3", server.addr))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(body.contains(&format!(r#""extra":{kept}"#)), "{body}");
    assert!(body.contains(&format!(r#""extra":{duplicates}"#)), "{body}");
    drop(server);
    running.stop().unwrap();
}

/// A line far over `max_event_bytes` is one bad event, read in bounded
/// memory and dead-lettered with only its first `max_event_bytes`.
#[test]
fn a_line_far_over_the_limit_is_bad_and_dead_lettered_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let huge = format!(
        r#"{{"type":"activity","id":"huge","time":{T0},"actor":"user:a","verb":"v","object":"a:b","extra":{{"pad":"{}"}}}}"#,
        "x".repeat(30 << 20)
    );
    let lines = ten_activity_feed(&[huge]);
    write_lines(&path, &lines);
    let topology = file_topology(&path, false, FeedConfig::default(), dir.path());
    let (shown, status) = run_to_end(&topology, 1, &lines[..11]);
    assert_eq!(status.events_bad(), 1);
    assert_eq!(feed_ids(&shown, "user:f").len(), 10);
    let letters = std::fs::metadata(&topology.dead_letter.path).unwrap().len();
    assert!(
        letters < 2 << 20,
        "the dead letter of a 30 MB line holds {letters} bytes"
    );
}

/// A dead-letter file that cannot take a bad line (a full disk: Linux's
/// `/dev/full`) loses nothing and hides nothing: `feedstorm run` exits
/// non-zero at once with the error. Before, the worker that met the line
/// stopped and the other ran on without it, for ever (SIGTERM could not
/// stop it either: a stop waits for an epoch every worker finishes).
#[test]
fn an_unwritable_dead_letter_file_stops_run_with_the_error() {
    assert!(
        std::path::Path::new("/dev/full").exists(),
        "this test needs /dev/full"
    );
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    // The bad line is the file's first: only worker 0 of 2 reads it.
    let mut lines = vec!["not json at all".to_owned()];
    lines.extend(random_lines(
        9,
        Shape {
            events: 300,
            users: 6,
            things: 5,
            ids: 100,
            times: 30,
            spacing: 60_000,
        },
    ));
    write_lines(&events, &lines);
    let topology = dir.path().join("full.toml");
    std::fs::write(
        &topology,
        format!(
            "name = \"full\"\n[[spout]]\ntype = \"file\"\npath = {events:?}\n[sink]\n\
             type = \"embedded\"\n[dead_letter]\npath = \"/dev/full\"\n[checkpoint]\ninterval = \"0s\"\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("run.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_feedstorm"))
        .arg("run")
        .arg(&topology)
        .args(["--listen", "127.0.0.1:0", "--workers", "2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "still running 60 s after its dead-letter write failed:\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "exits non-zero: {status}\n{log}");
    assert!(
        log.contains("dead letters: cannot write /dev/full"),
        "the error names the dead-letter file:\n{log}"
    );
}
