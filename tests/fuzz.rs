//! Fuzzing on stable Rust, seeded: hostile event lines into the decoder, and
//! hostile query strings, cursors and paths into the running HTTP API.
//!
//! Each target runs `FEEDSTORM_FUZZ_SECONDS` (default 3 s, so that CI runs
//! it every time; `FEEDSTORM_FUZZ_SECONDS=600 cargo test --release --test
//! fuzz -- --nocapture` is the long run) and prints its executions. A crash
//! prints the seed and the input that caused it; each becomes a regression
//! case below.

mod common;

use std::time::{Duration, Instant};

use feedstorm::event::{decode_read, Limits};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn budget() -> Duration {
    let seconds = std::env::var("FEEDSTORM_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    Duration::from_secs(seconds)
}

/// 2026-11-21T00:00:00Z, the "now" the decoder is fuzzed at.
const NOW: i64 = common::T0;

/// A JSON-ish value built to hurt: deep, wide, odd numbers and strings.
fn hostile_value(rng: &mut StdRng, depth: usize) -> String {
    match rng.gen_range(0..12) {
        0 if depth < 400 => {
            let deeper = depth + 1 + rng.gen_range(0..40);
            let inner = hostile_value(rng, deeper);
            format!(r#"{{"k":{inner}}}"#)
        }
        1 if depth < 400 => format!("[{}]", hostile_value(rng, depth + 1)),
        2 => format!("[{}]", vec!["0"; rng.gen_range(0..20_000)].join(",")),
        3 => {
            let keys: Vec<String> = (0..rng.gen_range(0..5_000))
                .map(|i| format!(r#""k{}":{i}"#, i % 7))
                .collect();
            format!("{{{}}}", keys.join(","))
        }
        4 => [
            "9223372036854775807",
            "-9223372036854775808",
            "1e400",
            "-0",
            "18446744073709551616",
            "0.5",
        ][rng.gen_range(0..6)]
        .to_owned(),
        5 => format!(r#""{}""#, hostile_text(rng)),
        6 => "null".into(),
        7 => "true".into(),
        8 => [
            r#""9999-12-31T23:59:59Z""#,
            r#""0000-01-01T00:00:00Z""#,
            r#""2026-11-21T10:00:00+25:00""#,
            r#""2026-02-30T10:00:00Z""#,
            r#""2026-11-21T10:00:00.123456789123Z""#,
        ][rng.gen_range(0..5)]
        .to_owned(),
        _ => rng.gen_range(-(1i64 << 50)..(1i64 << 50)).to_string(),
    }
}

/// Text with control characters, escapes, odd Unicode and kind:id shapes.
fn hostile_text(rng: &mut StdRng) -> String {
    let pieces = [
        "user:", "listing:", ":", "::", "\\u0000", "\\n", "\\\"", "\\ud800", "é", "\u{202e}", "x",
        "user:a", " ", "\\t", "%00", "..", "/",
    ];
    (0..rng.gen_range(0..12))
        .map(|_| pieces[rng.gen_range(0..pieces.len())])
        .collect()
}

/// An event line: a valid event of each kind with some fields replaced by
/// hostile values or dropped, and perhaps mangled bytes.
fn hostile_line(rng: &mut StdRng) -> Vec<u8> {
    let valid: [&[(&str, String)]; 3] = [
        &[
            ("type", r#""activity""#.into()),
            ("id", r#""a1""#.into()),
            ("time", NOW.to_string()),
            ("actor", r#""user:a""#.into()),
            ("verb", r#""love""#.into()),
            ("object", r#""listing:b""#.into()),
            ("target", r#""user:c""#.into()),
            ("extra", r#"{"k":[1,2,{"x":null}]}"#.into()),
        ],
        &[
            ("type", r#""follow""#.into()),
            ("time", r#""2026-11-21T00:00:00Z""#.into()),
            ("user", r#""user:a""#.into()),
            ("interest", r#""listing:b""#.into()),
        ],
        &[
            ("type", r#""delete""#.into()),
            ("time", NOW.to_string()),
            ("id", r#""a1""#.into()),
        ],
    ];
    let mut fields: Vec<(String, String)> = valid[rng.gen_range(0..valid.len())]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    for _ in 0..rng.gen_range(0..3) {
        let at = rng.gen_range(0..fields.len());
        match rng.gen_range(0..4) {
            0 => {
                fields.remove(at);
                if fields.is_empty() {
                    break;
                }
            }
            1 => fields[at].1 = format!(r#""{}""#, hostile_text(rng)),
            _ => fields[at].1 = hostile_value(rng, 0),
        }
    }
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!(r#""{k}":{v}"#))
        .collect();
    let mut line = format!("{{{}}}", body.join(",")).into_bytes();
    if rng.gen_bool(0.3) {
        for _ in 0..rng.gen_range(1..3) {
            if line.is_empty() {
                break;
            }
            let at = rng.gen_range(0..line.len());
            match rng.gen_range(0..4) {
                0 => line[at] = rng.gen(), // any byte, invalid UTF-8 included
                1 => line.truncate(at),
                2 => line.insert(at, b'{'),
                _ => line.insert(at, 0xff),
            }
        }
    }
    line
}

#[test]
fn the_decoder_never_panics_and_what_it_accepts_is_within_limits() {
    let limits = Limits::with_max_bytes(1 << 20);
    let started = Instant::now();
    let (mut runs, mut accepted) = (0u64, 0u64);
    let mut seed = 0u64;
    while started.elapsed() < budget() {
        seed += 1;
        let mut rng = StdRng::seed_from_u64(seed);
        let line = hostile_line(&mut rng);
        let decoded = std::panic::catch_unwind(|| decode_read(&line, &limits, NOW));
        let Ok(decoded) = decoded else {
            panic!(
                "seed {seed}: the decoder panicked on {:?}",
                String::from_utf8_lossy(&line)
            );
        };
        runs += 1;
        if let Ok(event) = decoded {
            accepted += 1;
            assert!(event.time() <= NOW + limits.max_future_ms, "seed {seed}");
        }
    }
    eprintln!("decoder: {runs} executions, {accepted} accepted, no crash");
    assert!(runs > 0);
}

#[test]
fn hostile_queries_cursors_and_paths_get_answers_not_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    common::write_lines(
        &path,
        &common::random_lines(
            5,
            common::Shape {
                events: 300,
                users: 5,
                things: 5,
                ids: 100,
                times: 50,
                spacing: 1_000,
            },
        ),
    );
    let topology = common::file_topology(
        &path,
        false,
        feedstorm::config::FeedConfig::default(),
        dir.path(),
    );
    let running =
        feedstorm::runtime::Running::start(&topology, &feedstorm::runtime::RunOptions::threads(1))
            .unwrap();
    common::wait_caught_up(&running, 300);
    let server = common::serve(&running, &topology, 100);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let routes = [
        "/feeds/",
        "/feeds/user:u1",
        "/feeds/user:u1/digest",
        "/feeds/user:u1/notifications",
    ];
    let params = ["limit", "offset", "cursor", "name", "", "limit[]", "%ff"];
    let started = Instant::now();
    let (mut runs, mut seed) = (0u64, 0u64);
    while started.elapsed() < budget() {
        seed += 1;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut target = routes[rng.gen_range(0..routes.len())].to_owned();
        if rng.gen_bool(0.3) {
            target.push_str(
                &percent_encoding::utf8_percent_encode(
                    &hostile_text(&mut rng),
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .to_string(),
            );
        }
        let query: Vec<String> = (0..rng.gen_range(0..4))
            .map(|_| {
                let value = match rng.gen_range(0..4) {
                    0 => hostile_value(&mut rng, 390).chars().take(300).collect(),
                    1 => {
                        // A base64-looking cursor of hostile bytes.
                        let bytes: Vec<u8> = (0..rng.gen_range(0..40)).map(|_| rng.gen()).collect();
                        base64_like(&bytes)
                    }
                    2 => hostile_text(&mut rng),
                    _ => rng.gen_range(-5i64..1_000_000_000_000).to_string(),
                };
                format!(
                    "{}={}",
                    params[rng.gen_range(0..params.len())],
                    percent_encoding::utf8_percent_encode(
                        &value,
                        percent_encoding::NON_ALPHANUMERIC
                    )
                )
            })
            .collect();
        if !query.is_empty() {
            target = format!("{target}?{}", query.join("&"));
        }
        let url = format!("http://{}{target}", server.addr);
        let code = match agent.get(&url).call() {
            Ok(answer) => answer.status(),
            Err(ureq::Error::Status(code, answer)) => {
                let body: serde_json::Value = answer.into_json().unwrap_or_else(|e| {
                    panic!("seed {seed}: {code} without a JSON error ({e}): {url}")
                });
                assert!(body["error"].is_string(), "seed {seed}: {url}: {body}");
                code
            }
            Err(error) => panic!("seed {seed}: no answer ({error}) to {url}"),
        };
        assert!(code < 500, "seed {seed}: {code} for {url}");
        runs += 1;
    }
    assert!(
        running.status.healthy(),
        "a worker failed under fuzzed queries"
    );
    eprintln!("http: {runs} requests, every one answered below 500 with JSON errors");
    drop(server);
    running.stop().unwrap();
}

/// Unpadded URL-safe base64, as cursors are written.
fn base64_like(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % 64] as char)
        .collect()
}
