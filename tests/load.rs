//! The probes answer while the topology runs flat out: a generated backlog
//! is read as fast as the workers go while `/health` is sampled every 50 ms.

mod common;

use std::time::{Duration, Instant};

use feedstorm::config::{GeneratorConfig, SpoutConfig, TopologyConfig};
use feedstorm::runtime::{RunOptions, Running};

#[test]
fn health_answers_fast_while_the_topology_runs_flat_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut topology: TopologyConfig = toml::from_str("").unwrap();
    topology.spouts = vec![SpoutConfig::Generator(GeneratorConfig {
        users: 5_000,
        listings: 2_500,
        follows: 150_000,
        events: Some(150_000),
        rate: None,
        ..GeneratorConfig::default()
    })];
    topology.dead_letter.path = dir.path().join("dead.jsonl");
    topology.checkpoint = feedstorm::config::CheckpointConfig::off();
    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    let server = common::serve(&running, &topology, 100);
    let probe = |path: &str| format!("http://{}{path}", server.addr);
    let (mut took, mut status_took) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(300);
    // Sampled until the backlog is read and written; the pacing is the
    // probe's own period, not a wait for anything.
    while !(running.status.caught_up() && running.status.spouts_finished()) {
        assert!(
            Instant::now() < deadline,
            "the backlog was not read in 300 s"
        );
        for (path, took) in [("/health", &mut took), ("/status", &mut status_took)] {
            let started = Instant::now();
            let answer = ureq::get(&probe(path))
                .timeout(Duration::from_secs(10))
                .call();
            took.push(started.elapsed());
            assert_eq!(
                answer.map(|a| a.status()).ok(),
                Some(200),
                "{path} under load"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        took.len() >= 20,
        "only {} samples: the load was too short",
        took.len()
    );
    for (path, took) in [("/health", &mut took), ("/status", &mut status_took)] {
        took.sort();
        let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
        let (p50, p99, max) = (at(0.5), at(0.99), took[took.len() - 1]);
        eprintln!(
            "{path} under full load: {} samples, p50 {p50:?}, p99 {p99:?}, max {max:?}",
            took.len()
        );
        // Generous: the machine is shared; the figure is in the log above.
        assert!(p99 < Duration::from_millis(250), "{path}: p99 {p99:?}");
    }
    drop(server);
    running.stop().unwrap();
}
