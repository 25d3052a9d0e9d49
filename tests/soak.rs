//! The soak: a followed file appended at a steady rate for a long time, good
//! and bad events mixed, with the resident memory sampled all along; at the
//! end the feeds equal the reference model's and the memory curve is flat.
//!
//! Not part of the suite (it takes its time); run it with
//!
//! ```sh
//! FEEDSTORM_SOAK_SECONDS=600 FEEDSTORM_SOAK_RATE=2500 \
//!     cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! (defaults: 600 s at 2,500 events/s, about half what the file spout and
//! two workers sustain on 2 cores). It prints the RSS curve, one sample every
//! 10 s. Retention is 1 hour of event time while events are 100 ms apart, so
//! state is bounded by the window, not by the run's length.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use feedstorm::config::FeedConfig;
use feedstorm::runtime::{RunOptions, Running};
use rand::{Rng, SeedableRng};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The `i`-th event of the soak, 100 ms of event time apart, every 50th
/// bad. Each of 2,000 users follows and unfollows among 20 interests of its
/// own (people and things), so the graph stays about the same size however
/// long the run; activities, and deletes of earlier ones, fill the rest.
fn soak_line(rng: &mut rand::rngs::StdRng, i: u64) -> String {
    let time = T0 + (i as i64) * 100;
    if i % 50 == 49 {
        return [
            "{not json",
            r#"{"type":"poke","time":1}"#,
            r#"{"type":"follow","time":"noon"}"#,
        ][(i / 50 % 3) as usize]
            .to_owned();
    }
    let u = rng.gen_range(0..2_000u64);
    let user = format!("user:u{u}");
    let interest = |k: u64| {
        let j = (u * 7 + k * 131) % 2_500;
        if j < 2_000 {
            format!("user:u{j}")
        } else {
            format!("listing:l{}", j - 2_000)
        }
    };
    match rng.gen_range(0..100) {
        0..=14 => serde_json::json!({"type": "follow", "time": time, "user": user,
            "interest": interest(rng.gen_range(0..20))}),
        15..=29 => serde_json::json!({"type": "unfollow", "time": time, "user": user,
            "interest": interest(rng.gen_range(0..20))}),
        30 => serde_json::json!({"type": "delete", "time": time,
            "id": format!("s{}", rng.gen_range(0..=i))}),
        _ => serde_json::json!({"type": "activity", "id": format!("s{i}"), "time": time,
            "actor": user, "verb": "love", "object": format!("listing:l{}", rng.gen_range(0..500)),
            "target": format!("user:u{}", rng.gen_range(0..2_000))}),
    }
    .to_string()
}

#[test]
#[ignore = "a long run: see the module doc"]
fn soak_at_a_steady_rate_ends_exact_with_flat_memory() {
    let (seconds, rate) = (
        env("FEEDSTORM_SOAK_SECONDS", 600),
        env("FEEDSTORM_SOAK_RATE", 2_500),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    std::fs::File::create(&path).unwrap();
    let feed = FeedConfig {
        retention: Duration::from_secs(3_600),
        ..FeedConfig::default()
    };
    let topology = file_topology(&path, true, feed.clone(), dir.path());
    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    let started = Instant::now();
    let mut curve = Vec::new();
    let mut next_sample = Duration::ZERO;
    let mut written = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        // Append what the rate allows so far, in one write.
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        let mut chunk = String::new();
        while written < due {
            let line = soak_line(&mut rng, written);
            chunk.push_str(&line);
            chunk.push('\n');
            written += 1;
        }
        file.write_all(chunk.as_bytes()).unwrap();
        if started.elapsed() >= next_sample {
            let sample = (
                started.elapsed().as_secs(),
                rss_bytes() >> 20,
                running.status.events_in(),
            );
            eprintln!(
                "t={:>4} s  rss={:>5} MiB  read={}",
                sample.0, sample.1, sample.2
            );
            curve.push(sample);
            next_sample += Duration::from_secs(10);
        }
        assert!(running.status.healthy(), "a worker failed");
        std::thread::sleep(Duration::from_millis(20)); // the writer's pace
    }
    // The lines are not kept in memory (they would grow the curve): read
    // back from the file at the end. Every 50th is bad by construction.
    wait_caught_up(&running, written);
    assert_eq!(running.status.events_bad(), written / 50);
    let text = std::fs::read_to_string(&path).unwrap();
    let good: Vec<String> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i as u64 % 50 != 49)
        .map(|(_, l)| l.to_owned())
        .collect();
    assert_heads("after the soak", &running, &topology, &good);
    // Flat: the last third's peak within 25% of the middle third's.
    let third = curve.len() / 3;
    let peak = |s: &[(u64, u64, u64)]| s.iter().map(|c| c.1).max().unwrap_or(0);
    let (middle, last) = (peak(&curve[third..2 * third]), peak(&curve[2 * third..]));
    eprintln!("rss peak: middle third {middle} MiB, last third {last} MiB; {written} events");
    assert!(
        last as f64 <= middle as f64 * 1.25 + 16.0,
        "RSS grew: {curve:?}"
    );
    running.stop().unwrap();
}
