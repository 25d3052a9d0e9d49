//! The Kafka spout against a real Kafka-protocol broker (Tansu, started by
//! scripts/servers.sh; FEEDSTORM_KAFKA_BROKERS, default 127.0.0.1:9092). A
//! test that cannot reach it fails: it does not skip.
#![cfg(all(feature = "kafka", feature = "server-tests"))]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::kafka::*;
use common::*;
use feedstorm::config::TopologyConfig;
use feedstorm::runtime::{RunOptions, Running};
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};

/// The workload of the tests that read one topic to its end.
const SMALL: Shape = Shape {
    events: 4_000,
    users: 40,
    things: 25,
    ids: 1_500,
    times: 500,
    spacing: 1_000,
};

/// A topic of the test's own, created with `partitions`.
fn topic(name: &str, partitions: i32) -> String {
    let topic = format!("test-{name}-{}-{partitions}", std::process::id());
    create_topic(&topic, partitions);
    topic
}

/// Produces `lines` with confluent-kafka, the Python client (a real client
/// independent of feedstorm; scripts/servers.sh installs it into .run/pylib),
/// unkeyed: order must not matter.
fn produce_plain(topic: &str, lines: &[String], dir: &Path) {
    let path = dir.join("plain.jsonl");
    write_lines(&path, lines);
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .arg(format!("{root}/tests/support/produce.py"))
        .args([&brokers(), topic])
        .arg(&path)
        .env("PYTHONPATH", format!("{root}/.run/pylib"))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "confluent-kafka producer (scripts/servers.sh start installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("produced {}", lines.len())
    );
}

/// Produces `lines` with `feedstorm produce --file`.
fn produce_cli(topic: &str, lines: &[String], dir: &Path) {
    let path = dir.join("produce.jsonl");
    write_lines(&path, lines);
    let out = Command::new(env!("CARGO_BIN_EXE_feedstorm"))
        .args([
            "produce",
            "--quiet",
            "--brokers",
            &brokers(),
            "--topic",
            topic,
            "--file",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "feedstorm produce: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with(&format!("produced {} events", lines.len())),
        "{said}"
    );
}

/// Waits until the topology is caught up; asserts that `caught_up` never
/// shows before every message in the topic (`messages`) was read.
fn wait_caught_up_to_high_watermarks(running: &Running, messages: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let caught_up = running.status.caught_up();
        let read = running.status.events_in();
        if caught_up {
            assert_eq!(
                read, messages,
                "caught_up before reaching the high watermarks"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not caught up: {read} of {messages} messages read"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A message as the tests look at it.
struct Fetched {
    offset: i64,
    payload: String,
    headers: BTreeMap<String, String>,
}

/// `count` messages of `topic`'s `partition` from offset `from`.
fn fetch(topic: &str, partition: i32, from: i64, count: usize) -> Vec<Fetched> {
    let consumer: BaseConsumer = feedstorm::kafka::client_config(&brokers(), &Default::default())
        .set("group.id", "test-fetch")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(from))
        .unwrap();
    consumer.assign(&list).unwrap();
    let text =
        |bytes: Option<&[u8]>| String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned();
    let mut found = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while found.len() < count {
        assert!(
            Instant::now() < deadline,
            "{topic}/{partition}: {} of {count} messages from {from} fetched",
            found.len()
        );
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.unwrap();
            let headers = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), text(h.value)))
                        .collect()
                })
                .unwrap_or_default();
            found.push(Fetched {
                offset: message.offset(),
                payload: text(message.payload()),
                headers,
            });
        }
    }
    found
}

/// The dead-letter topic's messages (one partition), all of them.
fn dead_letters(topic: &str) -> Vec<Fetched> {
    let consumer: BaseConsumer = feedstorm::kafka::client_config(&brokers(), &Default::default())
        .create()
        .unwrap();
    let (low, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    fetch(topic, 0, low, (high - low) as usize)
}

/// Events produced by confluent-kafka and by `feedstorm produce` into topics
/// of 1 and 8 partitions, read by 1 and 3 workers: the feeds and digests
/// equal the reference; bad events land in the dead-letter topic with their
/// partition and offset, and processing goes on.
#[test]
fn feeds_from_kafka_equal_the_reference_on_1_and_8_partitions_and_1_and_3_workers() {
    // Blocks mixed in: `produce` keys them by user, as follows.
    let mut lines = random_lines_mixed(71, SMALL, BLOCK_MIX);
    let bad = vec![
        "{not json".to_owned(),
        r#"{"type":"activity","id":"x"}"#.to_owned(),
        "[1,2,3]".to_owned(),
    ];
    let all = lines.clone();
    let second = lines.split_off(lines.len() / 2);
    for partitions in [1, 8] {
        let dir = tempfile::tempdir().unwrap();
        let topic = topic("exact", partitions);
        let dead = topic.clone() + "-dead";
        create_topic(&dead, 1);
        produce_plain(&topic, &lines, dir.path());
        produce_plain(&topic, &bad, dir.path());
        produce_cli(&topic, &second, dir.path());
        let total = (lines.len() + bad.len() + second.len()) as u64;
        for workers in [1, 3] {
            let mut topology = kafka_topology(&topic, &format!("{topic}-{workers}"), dir.path());
            topology.dead_letter.topic = Some(dead.clone());
            topology.dead_letter.brokers = Some(brokers());
            let running = Running::start(&topology, &RunOptions::threads(workers)).unwrap();
            wait_caught_up_to_high_watermarks(&running, total);
            let what = format!("{partitions} partitions, {workers} workers");
            assert_eq!(running.status.events_bad(), bad.len() as u64, "{what}");
            let shown = read_over_http(&running, &topology, &all);
            assert_shown(&what, &expected(&all, &topology), &shown);
            running.stop().unwrap();
        }
        // Each run sent the bad events once.
        let letters = dead_letters(&dead);
        assert_eq!(letters.len(), 2 * bad.len());
        for Fetched {
            payload, headers, ..
        } in &letters
        {
            assert!(bad.contains(payload), "{payload}");
            assert_eq!(headers["source_topic"], topic);
            let partition: i32 = headers["source_partition"].parse().unwrap();
            let offset: i64 = headers["source_offset"].parse().unwrap();
            assert!((0..partitions).contains(&partition));
            let source = fetch(&topic, partition, offset, 1).remove(0);
            assert_eq!(source.offset, offset);
            assert_eq!(&source.payload, payload, "the header points at the message");
            assert!(!headers["error"].is_empty());
        }
    }
}

/// A checkpoint written by 2 workers reading 4 partitions resumes on 3: the
/// partitions move to other workers, the new run reads exactly the events
/// produced after the checkpoint, and the feeds and digests stay exact.
#[test]
fn a_checkpoint_of_2_workers_resumes_on_3_reading_only_what_came_after() {
    let lines = random_lines(74, SMALL);
    let dir = tempfile::tempdir().unwrap();
    let topic = topic("resume", 4);
    let mut topology = kafka_topology(&topic, &topic, dir.path());
    topology.checkpoint = feedstorm::config::CheckpointConfig {
        dir: dir.path().join("checkpoints"),
        interval: Duration::from_millis(20),
        keep: 2,
    };
    let (first, second) = lines.split_at(2_500);
    produce_plain(&topic, first, dir.path());
    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    wait_caught_up_to_high_watermarks(&running, first.len() as u64);
    // A checkpoint taken after catching up holds everything read.
    wait_for_a_checkpoint_of_everything(&running);
    drop(running); // no clean stop
    produce_plain(&topic, second, dir.path());
    let running = Running::start(&topology, &RunOptions::threads(3)).unwrap();
    wait_caught_up_to_high_watermarks(&running, second.len() as u64);
    let shown = read_over_http(&running, &topology, &lines);
    assert_shown("resumed on 3 workers", &expected(&lines, &topology), &shown);
    running.stop().unwrap();
}

/// The committed offset of each partition of `topic` for `group`, read
/// from the broker by a consumer of the test's own (-1: none).
fn committed(topic: &str, group: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = feedstorm::kafka::client_config(&brokers(), &Default::default())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let found = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap();
    (0..partitions)
        .map(|p| {
            let at = match found.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(at)) => at,
                _ => -1,
            };
            (p, at)
        })
        .collect()
}

/// The per-partition positions of the newest complete checkpoint under
/// `root`, read from its manifest as documented (README, "Checkpoints"):
/// `sources[].position.kafka.next["TOPIC/PARTITION"]`.
fn checkpointed_offsets(root: &Path, topic: &str) -> Option<BTreeMap<i32, i64>> {
    let mut dirs: Vec<_> = std::fs::read_dir(root)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs.into_iter().rev().find_map(|dir| {
        let text = std::fs::read_to_string(dir.join("MANIFEST.json")).ok()?;
        let manifest: serde_json::Value = serde_json::from_str(&text).ok()?;
        let next = manifest["sources"][0]["position"]["kafka"]["next"].as_object()?;
        Some(
            next.iter()
                .filter_map(|(key, at)| {
                    let partition = key.strip_prefix(&format!("{topic}/"))?.parse().ok()?;
                    Some((partition, at.as_i64()?))
                })
                .collect(),
        )
    })
}

/// Whether a checkpoint is being written under `root`: a directory newer
/// than every complete one, without its manifest yet.
fn checkpoint_in_progress(root: &Path) -> bool {
    let mut dirs: Vec<_> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs.last()
        .is_some_and(|newest| !newest.join("MANIFEST.json").exists())
}

struct Topology {
    child: Child,
    log: std::path::PathBuf,
    addr: String,
}

impl Drop for Topology {
    /// A failing test must not leave its child running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_child(topology: &Path, dir: &Path, run: usize) -> Topology {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.join(format!("run-{run}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_feedstorm"))
        .args(["run"])
        .arg(topology)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--workers", "2"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Topology {
        child,
        log,
        addr: format!("127.0.0.1:{port}"),
    }
}

fn status(addr: &str) -> Option<serde_json::Value> {
    ureq::get(&format!("http://{addr}/status"))
        .call()
        .ok()?
        .into_json()
        .ok()
}

/// SIGKILL at random points, five times (once while a checkpoint is being
/// written, twice after a run recovered), while a workload streams in:
/// the final feeds, digests and notification feeds in Redis, read with a
/// plain Redis client, equal the reference; the committed offsets, sampled
/// from the broker all along, are never past the newest durable
/// checkpoint; and the last restart reads only what its checkpoint lacks.
#[test]
fn feeds_are_exact_after_five_sigkills_and_restarts_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let lines = random_lines_mixed(
        72,
        Shape {
            events: 24_000,
            users: 60,
            things: 30,
            ids: 9_000,
            times: 3_000,
            spacing: 1_000,
        },
        BLOCK_MIX,
    );
    let partitions = 4;
    let topic = topic("crash", partitions);
    let target = redis_target::single();
    let prefix = target.prefix("crash");
    let checkpoints = dir.path().join("checkpoints");
    let root = checkpoints.join("crash");
    let url = &target.url;
    let toml = kafka_redis_toml("crash", &topic, &topic, &prefix, url, dir.path(), "700ms");
    let path = dir.path().join("crash.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(toml.as_bytes())
        .unwrap();

    // The producer streams in chunks from its own thread, about 1,000
    // events/s: slower than the topology reads, so a run can recover while
    // it streams.
    let produce = |topic: &str, lines: &[String]| {
        produce_paced(topic, lines, 100, Duration::from_millis(100))
    };
    // The last 2,000 come after the last restart.
    let tail = lines.len() - 2_000;
    let producing = {
        let (topic, lines) = (topic.clone(), lines[..tail].to_vec());
        std::thread::spawn(move || produce(&topic, &lines))
    };
    // All along: a committed offset is never past the newest durable
    // checkpoint (the commit follows the manifest, so read it first).
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (topic, root, sampling) = (topic.clone(), root.clone(), sampling.clone());
        std::thread::spawn(move || {
            let mut samples = 0;
            while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                let committed = committed(&topic, &topic, partitions);
                let durable = checkpointed_offsets(&root, &topic).unwrap_or_default();
                for (p, at) in &committed {
                    if *at >= 0 {
                        let checkpoint = durable.get(p).copied().unwrap_or(-1);
                        assert!(
                            *at <= checkpoint,
                            "partition {p}: committed {at} past the durable checkpoint's {checkpoint}"
                        );
                    }
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            samples
        })
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(73);
    let mut run = start_child(&path, dir.path(), 0);
    let (mut committed_sum, mut resumed_from) = (0, 0);
    for kill in 1..=5 {
        if kill == 3 {
            // Once while a checkpoint is being written: parts on disk, no manifest yet.
            let deadline = Instant::now() + Duration::from_secs(30);
            while !checkpoint_in_progress(&root) {
                assert!(Instant::now() < deadline, "no checkpoint in progress seen");
                std::thread::sleep(Duration::from_micros(200));
            }
        } else if kill >= 4 {
            // The last two after this run recovered and acked, mid-stream:
            // the next run resumes from a checkpoint the store holds (and
            // more, written after it), so it rewrites only the users
            // written or changed since.
            let deadline = Instant::now() + Duration::from_secs(120);
            let sum = || {
                committed(&topic, &topic, partitions)
                    .values()
                    .map(|at| (*at).max(0))
                    .sum::<i64>()
            };
            while sum() <= committed_sum {
                assert!(
                    Instant::now() < deadline,
                    "no offset committed after recovery"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        } else {
            // A random point: after 0.3 to 1.5 s of running.
            std::thread::sleep(Duration::from_millis(rng.gen_range(300..1_500)));
        }
        run.child.kill().unwrap(); // SIGKILL
        run.child.wait().unwrap();
        committed_sum = committed(&topic, &topic, partitions)
            .values()
            .map(|at| (*at).max(0))
            .sum::<i64>();
        resumed_from = checkpointed_total(&root, &topic);
        assert!(
            committed_sum <= resumed_from,
            "restart {kill}: {committed_sum} offsets committed, {resumed_from} in the checkpoint"
        );
        run = start_child(&path, dir.path(), kill);
    }
    producing.join().unwrap();
    produce(&topic, &lines[tail..]);
    let total = lines.len() as i64;
    // The last run reads exactly what its checkpoint lacks.
    let must_read = total - resumed_from;
    let deadline = Instant::now() + Duration::from_secs(180);
    let read = loop {
        if let Some(s) = status(&run.addr) {
            let read = s["events_in"].as_i64().unwrap_or(0);
            if s["caught_up"] == true && read >= must_read {
                break read;
            }
        }
        if Instant::now() >= deadline {
            let log = std::fs::read_to_string(&run.log).unwrap();
            let tail: String = log.lines().rev().take(40).collect::<Vec<_>>().join("\n");
            panic!(
                "the last run did not catch up: {:?}\n{tail}",
                status(&run.addr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    let samples = sampler.join().unwrap();
    eprintln!(
        "last run: read {read} of {total} events; its checkpoint held {resumed_from}, \
         {committed_sum} were committed; committed offsets sampled {samples} times"
    );
    assert!(samples > 10, "committed offsets sampled {samples} times");
    assert!(committed_sum > 0, "no offset was ever committed");
    assert_eq!(
        read, must_read,
        "the last run read only what its checkpoint lacks"
    );

    let log = std::fs::read_to_string(&run.log).unwrap();
    assert!(
        log.contains("recovery rewrites only the users written or changed since the checkpoint"),
        "the last run resumed from a checkpoint the store holds: no full rewrite"
    );
    let topology: TopologyConfig = toml::from_str(&toml).unwrap();
    assert_redis_matches_reference(&target, &prefix, &lines, &topology, "after 5 SIGKILLs");
    run.child.kill().unwrap();
    run.child.wait().unwrap();
}

/// Events held by the newest complete checkpoint (sum of its offsets).
fn checkpointed_total(root: &Path, topic: &str) -> i64 {
    checkpointed_offsets(root, topic)
        .map(|o| o.values().sum())
        .unwrap_or(0)
}
