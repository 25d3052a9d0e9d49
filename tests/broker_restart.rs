//! The Kafka broker killed and restarted mid-stream: the topology waits
//! (back-pressure, no crash), resumes when the broker is back, and its feeds
//! stay exact. The broker is the Tansu that scripts/servers.sh started; this
//! test kills it (SIGKILL) and starts it again with the same command line in
//! the same directory, so its topics survive. Its own test binary, so that no
//! other test's broker disappears under it.
#![cfg(all(feature = "kafka", feature = "server-tests"))]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::kafka::*;
use common::*;
use feedstorm::runtime::{RunOptions, Running};

/// The broker process scripts/servers.sh started: its pid file, command
/// line and directory.
struct Broker {
    pid_file: PathBuf,
    args: Vec<String>,
    dir: PathBuf,
    down: bool,
}

impl Broker {
    fn find() -> Broker {
        let pid_file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".run/tansu.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .expect("the broker's pid file (scripts/servers.sh start)");
        let pid = pid.trim();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_else(|e| panic!("broker process {pid} (scripts/servers.sh start): {e}"));
        let args = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let dir = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
        Broker {
            pid_file,
            args,
            dir,
            down: false,
        }
    }

    fn kill(&mut self) {
        let pid = std::fs::read_to_string(&self.pid_file).unwrap();
        let killed = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .unwrap();
        assert!(killed.success());
        self.down = true;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{}", pid.trim())).exists() {
            assert!(Instant::now() < deadline, "the broker did not die");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the broker again, detached (it outlives this test, as the one
    /// scripts/servers.sh starts does), and records its pid where that
    /// script looks for it.
    fn start(&mut self) {
        let log = self.dir.parent().unwrap().join("tansu.log");
        let quoted: Vec<String> = self.args.iter().map(|a| format!("'{a}'")).collect();
        let started = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cd '{}' && {} >>'{}' 2>&1 </dev/null & echo $!",
                self.dir.display(),
                quoted.join(" "),
                log.display()
            ))
            .output()
            .unwrap();
        assert!(started.status.success());
        std::fs::write(&self.pid_file, &started.stdout).unwrap();
        self.down = false;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(brokers()).is_err() {
            assert!(Instant::now() < deadline, "the broker did not come back");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Broker {
    /// A failing test must not leave the broker down for the next one.
    fn drop(&mut self) {
        if self.down {
            self.start();
        }
    }
}

#[test]
fn the_broker_killed_and_restarted_mid_stream_leaves_feeds_exact() {
    let dir = tempfile::tempdir().unwrap();
    let lines = random_lines(
        91,
        Shape {
            events: 8_000,
            users: 40,
            things: 25,
            ids: 3_000,
            times: 1_000,
            spacing: 1_000,
        },
    );
    let topic = format!("broker-restart-{}", std::process::id());
    create_topic(&topic, 4);
    let mut broker = Broker::find();
    let topology = kafka_topology(&topic, &topic, dir.path());
    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    // About 2,000 events/s from a thread of its own; the producer waits out
    // the outage (librdkafka retries until the broker is back).
    let producing = {
        let (topic, lines) = (topic.clone(), lines.clone());
        std::thread::spawn(move || produce_paced(&topic, &lines, 200, Duration::from_millis(100)))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while running.status.events_in() < 2_000 {
        assert!(Instant::now() < deadline, "nothing read from the broker");
        std::thread::sleep(Duration::from_millis(5));
    }
    broker.kill();
    let read_before = running.status.events_in();
    std::thread::sleep(Duration::from_secs(2)); // the outage itself
    assert!(
        running.status.healthy(),
        "a worker failed while the broker was down"
    );
    broker.start();
    producing.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(running.status.caught_up() && running.status.events_in() >= lines.len() as u64) {
        assert!(
            Instant::now() < deadline,
            "not caught up after the broker came back: {} of {} read",
            running.status.events_in(),
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "read {read_before} events before the broker died, {} in all",
        running.status.events_in()
    );
    // The producer may have written a batch twice across the outage (its
    // acknowledgement lost with the broker): each message is read once,
    // and the duplicates change no feed (the heads are checked below).
    let messages = messages_in(&topic, 4);
    assert!(
        messages >= lines.len() as u64,
        "{messages} messages in the topic"
    );
    assert_eq!(
        running.status.events_in(),
        messages,
        "each message read once"
    );
    assert_heads("after a broker restart", &running, &topology, &lines);
    // Lag shows per partition, and comes to nothing once all is read.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lag = running.status.lag();
        let partitions: Vec<String> = (0..4).map(|p| format!("{topic}/{p}")).collect();
        if lag.keys().cloned().collect::<Vec<_>>() == partitions && lag.values().all(|l| *l == 0) {
            break;
        }
        assert!(Instant::now() < deadline, "lag {lag:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    running.stop().unwrap();
}
