//! Checkpoints: a restart resumes from the newest complete checkpoint, on
//! any number of workers, reads only what came after it, and ends with
//! exactly the feeds, digests and notification feeds of the reference model.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use feedstorm::config::{CheckpointConfig, FeedConfig, TopologyConfig};
use feedstorm::runtime::{RunOptions, Running};

fn checkpointed(events: &Path, dir: &Path) -> TopologyConfig {
    let mut topology = file_topology(events, true, FeedConfig::default(), dir);
    topology.checkpoint = CheckpointConfig {
        dir: dir.join("checkpoints"),
        interval: Duration::from_millis(5),
        keep: 2,
    };
    topology
}

/// Waits until the topology has caught up, and asserts that it read
/// exactly `events` events: a resume that replayed what its checkpoint
/// holds reads more.
fn wait_caught_up_reading(running: &Running, events: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(running.status.caught_up() && running.status.events_in() >= events) {
        assert!(
            running.status.healthy(),
            "a worker failed (its error is logged)"
        );
        assert!(
            Instant::now() < deadline,
            "not caught up: {} of {events} events in",
            running.status.events_in()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        running.status.events_in(),
        events,
        "events read: only those after the checkpoint"
    );
}

fn assert_exact(running: &Running, topology: &TopologyConfig, lines: &[String], run: &str) {
    let shown = read_over_http(running, topology, lines);
    assert_shown(run, &expected(lines, topology), &shown);
}

/// Four runs over a growing file, on 2, 2 again (each worker loads the
/// part it saved, whole), then 3 and 1 workers (the parts routed record by
/// record), each dropped without a clean stop once a checkpoint holds what
/// it read.
#[test]
fn restarts_resume_from_the_checkpoint_on_other_worker_counts_and_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    // Blocks mixed in: their LWW state is part of the interests checkpoint.
    let lines = random_lines_mixed(
        91,
        Shape {
            events: 6_000,
            users: 40,
            things: 25,
            ids: 2_500,
            times: 800,
            spacing: 60_000,
        },
        BLOCK_MIX,
    );
    write_lines(&path, &[]);
    let topology = checkpointed(&path, dir.path());
    let mut read = 0;
    for (workers, upto) in [(2, 2_000), (2, 3_000), (3, 4_500), (1, 6_000)] {
        append_lines(&path, &lines[read..upto]);
        let running = Running::start(&topology, &RunOptions::threads(workers)).unwrap();
        let run = format!("{workers} workers, lines {read}..{upto}");
        wait_caught_up_reading(&running, (upto - read) as u64);
        assert_exact(&running, &topology, &lines[..upto], &run);
        wait_for_a_checkpoint_of_everything(&running);
        drop(running); // no clean stop: what is not in a checkpoint is lost
        read = upto;
    }
}

/// A checkpoint directory with a torn part (or no manifest) is passed
/// over for the one before it.
#[test]
fn a_torn_checkpoint_is_ignored_for_the_previous_one() {
    // Cut short, as a crash mid-write of a filesystem without ordered
    // writes might.
    resume_past_a_damaged_part(|bytes| bytes[..bytes.len() / 2].to_vec(), "torn");
}

/// A part whose bytes changed but not its length (bit rot, a bad copy
/// of a backup) fails its checksum: the checkpoint is passed over for the
/// one before it, as a torn one is.
#[test]
fn a_corrupt_checkpoint_is_ignored_for_the_previous_one() {
    resume_past_a_damaged_part(
        |bytes| {
            let (mut bytes, third) = (bytes.to_vec(), bytes.len() / 3);
            for b in &mut bytes[third..] {
                *b = !*b;
            }
            bytes
        },
        "corrupt",
    );
}

/// Damages the newest checkpoint's largest part with `damage`, appends
/// more events and restarts: the feeds come out exact.
fn resume_past_a_damaged_part(damage: fn(&[u8]) -> Vec<u8>, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let lines = random_lines(
        92,
        Shape {
            events: 2_000,
            users: 20,
            things: 10,
            ids: 900,
            times: 300,
            spacing: 60_000,
        },
    );
    write_lines(&path, &lines[..1_000]);
    let topology = checkpointed(&path, dir.path());
    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    wait_caught_up_reading(&running, 1_000);
    wait_for_a_checkpoint_of_everything(&running);
    drop(running);
    let root = dir.path().join("checkpoints").join(&topology.name);
    let mut checkpoints: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("MANIFEST.json").exists())
        .collect();
    checkpoints.sort();
    assert!(checkpoints.len() >= 2, "keep = 2: two complete checkpoints");
    let newest = checkpoints.last().unwrap();
    let part = std::fs::read_dir(newest)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let bytes = std::fs::read(&part).unwrap();
    // A hard link may share it with an older checkpoint: replace, don't truncate in place.
    std::fs::remove_file(&part).unwrap();
    std::fs::write(&part, damage(&bytes)).unwrap();

    append_lines(&path, &lines[1_000..]);
    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(running.status.caught_up() && running.status.events_in() >= 1_000) {
        assert!(running.status.healthy(), "a worker failed ({what} part)");
        assert!(
            Instant::now() < deadline,
            "not caught up after a {what} checkpoint"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_exact(
        &running,
        &topology,
        &lines,
        &format!("after a {what} checkpoint"),
    );
}

/// SIGTERM to an idle `feedstorm run` with checkpoints on, over and over,
/// fresh and resumed: each time it checkpoints at the stop epoch and exits
/// 0 within 20 s. (A stop boundary that the operators' frontier had reached
/// before the checkpoint was asked for there left about every other stop
/// waiting forever.)
#[test]
fn sigterm_stops_an_idle_topology_with_a_checkpoint_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    write_lines(&events, &random_lines_mixed(7, SMALL_SHAPE, BLOCK_MIX));
    let toml = format!(
        "name = \"idle\"\n[[spout]]\ntype = \"file\"\npath = {:?}\n[sink]\ntype = \"embedded\"\n\
         [dead_letter]\npath = {:?}\n[checkpoint]\ndir = {:?}\ninterval = \"1h\"\n",
        events,
        dir.path().join("dead.jsonl"),
        dir.path().join("checkpoints"),
    );
    let topology = dir.path().join("idle.toml");
    std::fs::write(&topology, toml).unwrap();
    for round in 0..6 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_feedstorm"))
            .arg("run")
            .arg(&topology)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--workers", "2"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let caught_up = || -> bool {
            ureq::get(&format!("http://127.0.0.1:{port}/status"))
                .call()
                .ok()
                .and_then(|r| r.into_json::<serde_json::Value>().ok())
                .is_some_and(|s| s["caught_up"] == true)
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !caught_up() {
            assert!(Instant::now() < deadline, "round {round}: not caught up");
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = child.id().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("round {round}: still running 20 s after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "round {round}: {status}");
    }
}

const SMALL_SHAPE: Shape = Shape {
    events: 300,
    users: 8,
    things: 5,
    ids: 100,
    times: 50,
    spacing: 60_000,
};
