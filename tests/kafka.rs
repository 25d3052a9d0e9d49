//! The Kafka spout against a real Kafka-protocol broker (Tansu, started by
//! scripts/servers.sh; FEEDSTORM_KAFKA_BROKERS, default 127.0.0.1:9092). A
//! test that cannot reach it fails: it does not skip.
#![cfg(feature = "kafka")]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use feedstorm::config::{FeedConfig, KafkaSpoutConfig, SpoutConfig, TopologyConfig};
use feedstorm::kafka::Producer;
use feedstorm::runtime::{RunOptions, Running};
use rand::{Rng, SeedableRng};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};

fn brokers() -> String {
    std::env::var("FEEDSTORM_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A topic of the test's own, created with `partitions`.
fn topic(name: &str, partitions: i32) -> String {
    let topic = format!("test-{name}-{}-{partitions}", std::process::id());
    topic_with(&topic, partitions);
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

fn kafka_topology(topic: &str, group: &str, dir: &Path) -> TopologyConfig {
    let mut topology = file_topology(&dir.join("unused.jsonl"), false, FeedConfig::default(), dir);
    topology.spouts = vec![SpoutConfig::Kafka(KafkaSpoutConfig {
        brokers: brokers(),
        topics: vec![topic.to_owned()],
        group_id: group.to_owned(),
        options: Default::default(),
    })];
    topology
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
    let mut lines = random_lines(
        71,
        Shape {
            events: 4_000,
            users: 40,
            things: 25,
            ids: 1_500,
            times: 500,
            spacing: 1_000,
        },
    );
    let bad = vec![
        "{not json".to_owned(),
        r#"{"type":"activity","id":"x"}"#.to_owned(),
        "[1,2,3]".to_owned(),
    ];
    let events = decode_all(&lines);
    let feed = FeedConfig::default();
    let expected = feedstorm::reference::feeds(&events, &feed);
    let second = lines.split_off(lines.len() / 2);
    for partitions in [1, 8] {
        let dir = tempfile::tempdir().unwrap();
        let topic = topic("exact", partitions);
        let dead = topic.clone() + "-dead";
        topic_with(&dead, 1);
        produce_plain(&topic, &lines, dir.path());
        produce_plain(&topic, &bad, dir.path());
        produce_cli(&topic, &second, dir.path());
        let total = (lines.len() + bad.len() + second.len()) as u64;
        for workers in [1, 3] {
            let mut topology = kafka_topology(&topic, &format!("{topic}-{workers}"), dir.path());
            topology.dead_letter.topic = Some(dead.clone());
            topology.dead_letter.brokers = Some(brokers());
            let running = Running::start(&topology, &RunOptions { workers }).unwrap();
            wait_caught_up_to_high_watermarks(&running, total);
            let what = format!("{partitions} partitions, {workers} workers");
            assert_eq!(running.status.events_bad(), bad.len() as u64, "{what}");
            assert_same(&what, &expected, &store_feeds(running.store.as_ref()));
            assert_same(
                &format!("{what}: digests"),
                &feedstorm::reference::digests(
                    &events,
                    &feed,
                    &feedstorm::digest::DigestSpec::new(&topology.digests[0]),
                ),
                &store_digests(running.store.as_ref(), &topology.digests[0].name),
            );
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

/// Creates `name` with `partitions` (rdkafka's admin client).
fn topic_with(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        feedstorm::kafka::client_config(&brokers(), &Default::default())
            .create()
            .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for result in runtime
        .block_on(admin.create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .unwrap_or_else(|e| {
            panic!(
                "kafka at {} is not reachable (scripts/servers.sh start): {e}",
                brokers()
            )
        })
    {
        result.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
    }
}

/// Removes ANSI colour codes from a log.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `key=VALUE` in a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Per partition: the last `next` offset a run logged as read, and the
/// committed offset each partition started from.
fn read_and_committed(log: &str) -> (BTreeMap<i32, i64>, BTreeMap<i32, i64>) {
    let (mut read, mut committed) = (BTreeMap::new(), BTreeMap::new());
    for line in plain(log).lines() {
        let Some(partition) = field(line, "partition").and_then(|p| p.parse().ok()) else {
            continue;
        };
        if line.contains("kafka read") {
            read.insert(partition, field(line, "next").unwrap().parse().unwrap());
        } else if line.contains("kafka partition assigned") {
            committed.insert(
                partition,
                field(line, "committed").unwrap().parse().unwrap(),
            );
        }
    }
    (read, committed)
}

struct Topology {
    child: Child,
    log: std::path::PathBuf,
    addr: String,
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
        .env("RUST_LOG", "info,feedstorm::spout::kafka=debug")
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

/// SIGKILL at random points, five times, while a workload streams in: the
/// final feeds in Redis equal the reference (no entry lost, none twice), and
/// each restart re-reads at most the epochs that were in flight.
#[test]
fn feeds_are_exact_after_five_sigkills_and_restarts_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let lines = random_lines(
        72,
        Shape {
            events: 24_000,
            users: 60,
            things: 30,
            ids: 9_000,
            times: 3_000,
            spacing: 1_000,
        },
    );
    let topic = topic("crash", 4);
    let target = redis_target::single();
    let prefix = target.prefix("crash");
    let (epoch_events, inflight) = (500, 2);
    let toml = format!(
        r#"name = "crash"
[[spout]]
type = "kafka"
brokers = "{brokers}"
topics = ["{topic}"]
group_id = "{topic}"
[input]
epoch_events = {epoch_events}
max_inflight_epochs = {inflight}
[sink]
type = "redis"
url = "{url}"
prefix = "{prefix}"
[dead_letter]
path = "{dead}"
"#,
        brokers = brokers(),
        url = target.url,
        dead = dir.path().join("dead.jsonl").display(),
    );
    let path = dir.path().join("crash.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(toml.as_bytes())
        .unwrap();

    // The producer streams in chunks from its own thread.
    let producing = {
        let (topic, lines) = (topic.clone(), lines.clone());
        std::thread::spawn(move || {
            let producer = Producer::new(&brokers(), &Default::default()).unwrap();
            for chunk in lines.chunks(400) {
                let events = chunk
                    .iter()
                    .map(|l| feedstorm::event::decode(l.as_bytes(), 1 << 20).unwrap());
                feedstorm::kafka::produce::produce_events(
                    &producer,
                    &topic,
                    events,
                    None,
                    1 << 20,
                    false,
                )
                .unwrap();
                std::thread::sleep(Duration::from_millis(40)); // pacing, not synchronisation
            }
        })
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(73);
    let mut run = start_child(&path, dir.path(), 0);
    let mut rereads = Vec::new();
    for kill in 1..=5 {
        // A random point: after 0.3 to 1.5 s of running.
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..1_500)));
        run.child.kill().unwrap(); // SIGKILL
        run.child.wait().unwrap();
        let (read, _) = read_and_committed(&std::fs::read_to_string(&run.log).unwrap());
        run = start_child(&path, dir.path(), kill);
        // The restarted process logs each partition's committed offset first.
        let committed = loop {
            let (_, committed) = read_and_committed(&std::fs::read_to_string(&run.log).unwrap());
            if committed.len() == 4 {
                break committed;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let reread: BTreeMap<i32, i64> = read
            .iter()
            .map(|(p, next)| {
                (
                    *p,
                    (next - committed.get(p).copied().unwrap_or(0).max(0)).max(0),
                )
            })
            .collect();
        rereads.push(reread);
    }
    producing.join().unwrap();
    let total = lines.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(s) = status(&run.addr) {
            if s["caught_up"] == true && s["events_in"] == total {
                break;
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
    }
    let store = feedstorm::store::redis::RedisStore::open(&target.sink(&prefix)).unwrap();
    let expected = feedstorm::reference::feeds(&decode_all(&lines), &FeedConfig::default());
    assert_same("after 5 SIGKILLs", &expected, &store_feeds(&store));
    run.child.kill().unwrap();
    run.child.wait().unwrap();
    // The epochs in flight, plus one whose (asynchronous) commit may not
    // have reached the broker before the kill.
    let bound = (epoch_events * (inflight + 1)) as i64;
    for (kill, reread) in rereads.iter().enumerate() {
        eprintln!(
            "restart {}: events re-read past the committed offset, per partition: {reread:?}",
            kill + 1
        );
        for (partition, count) in reread {
            assert!(
                *count <= bound,
                "partition {partition} re-read {count} > {bound} after restart {}",
                kill + 1
            );
        }
    }
}
