//! Test support: adversarial random workloads and a one-call topology run.
#![allow(dead_code)]

pub mod judge;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod redis_target;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use feedstorm::config::{FeedConfig, FileSpoutConfig, SpoutConfig, TopologyConfig};
use feedstorm::http::{Api, Server};
use feedstorm::runtime::{RunOptions, Running};
#[allow(unused_imports)]
pub use judge::{assert_same, assert_shown, expected, expected_heads, Shown};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// 2026-11-21T00:00:00Z
pub const T0: i64 = 1_795_219_200_000;

/// Shape of a random workload.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub events: usize,
    pub users: usize,
    pub things: usize,
    pub ids: usize,
    /// Distinct event times (few means many ties).
    pub times: i64,
    /// Milliseconds between distinct times.
    pub spacing: i64,
}

fn typed(kind: &str, i: usize) -> String {
    format!("{kind}:{kind}{i}")
}

/// Formats `ms` in one of the wire's time forms, all meaning the same millisecond.
fn time_value(rng: &mut StdRng, ms: i64) -> serde_json::Value {
    let utc = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap();
    match rng.gen_range(0..4) {
        0 => json!(ms),
        1 => json!(utc
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()),
        2 => {
            // A non-UTC offset, with sub-millisecond digits that must be truncated.
            let offset =
                time::UtcOffset::from_hms(if rng.gen_bool(0.5) { 5 } else { -7 }, 30, 0).unwrap();
            let local = utc.to_offset(offset);
            let text = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}{}{}{:02}:{:02}",
                local.year(),
                local.month() as u8,
                local.day(),
                local.hour(),
                local.minute(),
                local.second(),
                local.millisecond(),
                rng.gen_range(0..1000),
                if offset.is_negative() { '-' } else { '+' },
                offset.whole_hours().abs(),
                offset.minutes_past_hour().abs(),
            );
            json!(text)
        }
        _ => json!(format!(
            "{}Z",
            utc.format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]"
            ))
            .unwrap()
        )),
    }
}

/// The shares of event kinds in a random sequence.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    /// Share of activities.
    pub activities: f64,
    /// Share of follows and unfollows.
    pub interests: f64,
    /// Of those, the share of unfollows.
    pub unfollows: f64,
    /// Share of blocks and unblocks (a third of them unblocks, and a tenth
    /// of them a block and an unblock of one pair at one time).
    pub blocks: f64,
    // The rest are deletes.
}

/// The mix of [`random_lines`]: mostly activities and follows.
pub const DEFAULT_MIX: Mix = Mix {
    activities: 0.45,
    interests: 0.40,
    unfollows: 0.35,
    blocks: 0.0,
};

/// A churning mix: as many unfollows as follows, and a quarter deletes.
pub const CHURN_MIX: Mix = Mix {
    activities: 0.40,
    interests: 0.35,
    unfollows: 0.5,
    blocks: 0.0,
};

/// [`DEFAULT_MIX`] with blocks and mutes: a tenth of the events block or
/// unblock people and things.
pub const BLOCK_MIX: Mix = Mix {
    activities: 0.42,
    interests: 0.35,
    unfollows: 0.3,
    blocks: 0.12,
};

/// A seeded random event sequence full of the adversarial cases: duplicate
/// activities, deletes before and after their activity (and of ids that
/// never come), follow/unfollow pairs with equal times, self-follows,
/// activities whose actor, object and target coincide, every time form.
pub fn random_lines(seed: u64, shape: Shape) -> Vec<String> {
    random_lines_mixed(seed, shape, DEFAULT_MIX)
}

/// [`random_lines`] with the event kinds in the shares of `mix`.
pub fn random_lines_mixed(seed: u64, shape: Shape, mix: Mix) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut activities: BTreeMap<usize, serde_json::Value> = BTreeMap::new();
    let mut lines = Vec::with_capacity(shape.events);
    let pick_any = |rng: &mut StdRng| {
        if rng.gen_bool(0.5) {
            typed("user", rng.gen_range(0..shape.users))
        } else {
            typed(
                if rng.gen_bool(0.7) {
                    "listing"
                } else {
                    "board"
                },
                rng.gen_range(0..shape.things),
            )
        }
    };
    for _ in 0..shape.events {
        // Times straddle T0, a UTC midnight, so day buckets split.
        let ms = T0 + (rng.gen_range(0..shape.times) - shape.times / 2) * shape.spacing;
        let roll: f64 = rng.gen();
        let line = if roll < mix.activities {
            let id = rng.gen_range(0..shape.ids);
            if let Some(existing) = activities.get(&id) {
                existing.clone() // an exact duplicate: at-least-once delivery
            } else {
                let verb = ["love", "post", "comment"][rng.gen_range(0..3)];
                let mut a = json!({
                    "type": "activity",
                    "id": format!("a{id}"),
                    "time": time_value(&mut rng, ms),
                    "actor": typed("user", rng.gen_range(0..shape.users)),
                    "verb": verb,
                    "object": pick_any(&mut rng),
                });
                if rng.gen_bool(0.5) {
                    a["target"] = json!(pick_any(&mut rng));
                }
                if rng.gen_bool(0.2) {
                    a["extra"] = json!({"n": rng.gen_range(0..9)});
                }
                if rng.gen_bool(0.1) {
                    a["target"] = serde_json::Value::Null;
                }
                activities.insert(id, a.clone());
                a
            }
        } else if roll < mix.activities + mix.interests {
            let user = typed("user", rng.gen_range(0..shape.users));
            let interest = if rng.gen_bool(0.05) {
                user.clone()
            } else {
                pick_any(&mut rng)
            };
            let kind = if rng.gen_bool(1.0 - mix.unfollows) {
                "follow"
            } else {
                "unfollow"
            };
            json!({"type": kind, "time": time_value(&mut rng, ms), "user": user, "interest": interest})
        } else if roll < mix.activities + mix.interests + mix.blocks {
            let user = typed("user", rng.gen_range(0..shape.users));
            let blocked = pick_any(&mut rng);
            let block = |kind: &str, rng: &mut StdRng| json!({"type": kind, "time": time_value(rng, ms), "user": user, "blocked": blocked});
            if rng.gen_bool(0.1) {
                // A block and an unblock of one pair at one time: the block wins, in either order.
                let (first, second) = if rng.gen_bool(0.5) {
                    ("block", "unblock")
                } else {
                    ("unblock", "block")
                };
                lines.push(block(first, &mut rng).to_string());
                block(second, &mut rng)
            } else {
                block(
                    if rng.gen_bool(0.67) {
                        "block"
                    } else {
                        "unblock"
                    },
                    &mut rng,
                )
            }
        } else {
            json!({"type": "delete", "time": time_value(&mut rng, ms), "id": format!("a{}", rng.gen_range(0..shape.ids + 3))})
        };
        lines.push(line.to_string());
    }
    lines
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let mut file = std::fs::File::create(path).unwrap();
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
}

/// A topology reading `path` into the embedded store.
pub fn file_topology(path: &Path, follow: bool, feed: FeedConfig, dir: &Path) -> TopologyConfig {
    let mut topology: TopologyConfig = toml::from_str("").unwrap();
    topology.spouts = vec![SpoutConfig::File(FileSpoutConfig {
        path: path.to_owned(),
        follow,
    })];
    topology.feed = feed;
    topology.input.epoch_events = 97; // many small epochs: more interleavings
    topology.dead_letter.path = dir.join("dead-letters.jsonl");
    // Each run starts from its sources; tests of checkpoints turn them on.
    topology.checkpoint = feedstorm::config::CheckpointConfig::off();
    topology.checkpoint.dir = dir.join("checkpoints");
    topology
}

/// Runs `topology` to the end of its (finite) input on `workers` workers
/// and reads back over HTTP what it shows for every typed id of `lines`.
pub fn run_to_end(
    topology: &TopologyConfig,
    workers: usize,
    lines: &[String],
) -> (Shown, Arc<feedstorm::status::Status>) {
    let running = Running::start(topology, &RunOptions::threads(workers)).unwrap();
    let status = running.status.clone();
    // A panicking worker leaves its peers waiting for it: fail, don't hang.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !(status.caught_up() && status.spouts_finished()) {
        assert!(status.healthy(), "a worker failed");
        assert!(
            std::time::Instant::now() < deadline,
            "topology did not finish within 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let shown = read_over_http(&running, topology, lines);
    running.stop().unwrap();
    (shown, status)
}

/// What `running` shows for every typed id of `lines`, read over HTTP.
pub fn read_over_http(running: &Running, topology: &TopologyConfig, lines: &[String]) -> Shown {
    let server = serve(running, topology, 1_000);
    let base = format!("http://{}", server.addr);
    judge::read_over_http(&base, &judge::typed_ids(lines), topology)
}

/// Appends lines to a (followed) event file.
pub fn append_lines(path: &Path, lines: &[String]) {
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
}

/// Waits until `events` events are read and everything is written.
pub fn wait_caught_up(running: &Running, events: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !(running.status.events_in() == events && running.status.caught_up()) {
        assert!(
            std::time::Instant::now() < deadline,
            "not caught up: {} of {events} events in",
            running.status.events_in()
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Waits for a durable checkpoint taken after the topology caught up, so
/// that it holds everything read so far.
pub fn wait_for_a_checkpoint_of_everything(running: &Running) {
    let caught_up_at = running.status.uptime().as_millis() as u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while running
        .status
        .last_checkpoint()
        .is_none_or(|c| c.epoch <= caught_up_at)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint after catching up"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// The HTTP API of `running` on a free loopback port.
pub fn serve(running: &Running, topology: &TopologyConfig, max_limit: usize) -> Server {
    Server::start(
        "127.0.0.1:0".parse().unwrap(),
        Api::new(running, topology, max_limit),
    )
    .unwrap()
}

/// `user`'s head in Redis (`ZREVRANGE PREFIX:feed:{USER} 0 -1 WITHSCORES`),
/// read with a plain client following the documented layout.
pub fn redis_head(
    c: &mut dyn redis::ConnectionLike,
    prefix: &str,
    user: &str,
) -> Vec<judge::reference::Entry> {
    let stored: Vec<(String, f64)> = redis::cmd("ZREVRANGE")
        .arg(format!("{prefix}:feed:{{{user}}}"))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(c)
        .unwrap();
    stored
        .into_iter()
        .map(|(id, score)| judge::reference::Entry {
            time: score as i64,
            id,
        })
        .collect()
}

/// Reads feeds, digests and notification feeds back from Redis with a plain
/// client, following the documented layout, and asserts they equal the
/// reference model's for `lines` under `topology`'s settings.
pub fn assert_redis_matches_reference(
    target: &redis_target::Target,
    prefix: &str,
    lines: &[String],
    topology: &TopologyConfig,
    label: &str,
) {
    fn query<T: redis::FromRedisValue>(
        c: &mut dyn redis::ConnectionLike,
        cmd: &mut redis::Cmd,
    ) -> T {
        cmd.query(c).unwrap()
    }
    let expected = judge::expected(lines, topology);
    target.with(|c| {
        for (user, head) in &expected.heads {
            let stored = redis_head(c, prefix, user);
            assert_eq!(&stored, head, "{label}: ZREVRANGE {prefix}:feed:{{{user}}}");
        }
        let feeds = target.keys(&format!("{prefix}:feed:*"));
        assert_eq!(feeds.len(), expected.heads.len(), "{label}: stale feeds");
        for (name, digests) in &expected.digests {
            for (user, groups) in digests {
                let zset = format!("{prefix}:digest:{name}:{{{user}}}");
                let keys: Vec<String> = query(c, redis::cmd("ZRANGE").arg(&zset).arg(0).arg(-1));
                let want: Vec<String> = groups.iter().map(|g| g.key.clone()).collect();
                assert_eq!(keys, want, "{label}: ZRANGE {zset}");
                let hash = format!("{prefix}:group:{name}:{{{user}}}");
                let stored: Vec<String> = query(c, redis::cmd("HMGET").arg(&hash).arg(&keys));
                let stored: Vec<judge::reference::Group> = stored
                    .iter()
                    .map(|j| judge::group_of_json(&serde_json::from_str(j).unwrap()))
                    .collect();
                assert_eq!(&stored, groups, "{label}: HMGET {hash}");
            }
            let stored = target.keys(&format!("{prefix}:digest:{name}:*"));
            assert_eq!(stored.len(), digests.len(), "{label}: stale digests {name}");
        }
    });
}

/// Asserts that the flat heads `running` shows over HTTP, for every typed
/// id of `lines`, are the reference's for `lines`.
pub fn assert_heads(what: &str, running: &Running, topology: &TopologyConfig, lines: &[String]) {
    let shown = read_over_http(running, topology, lines);
    assert_same(what, &expected_heads(lines, &topology.feed), &shown.heads);
}
