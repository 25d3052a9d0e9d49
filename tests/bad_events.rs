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
        let (store, status) = run_to_end(&topology, workers);
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
        let expected: Vec<(u64, String)> =
            bad_lines.iter().copied().zip(bad.iter().cloned()).collect();
        assert_eq!(found, expected, "dead letters with their line numbers");

        let good: Vec<String> = lines.iter().filter(|l| !bad.contains(l)).cloned().collect();
        let expected_feeds = feedstorm::reference::feeds(&decode_all(&good), &feed);
        assert_eq!(store_feeds(store.as_ref()), expected_feeds);
    }
}
