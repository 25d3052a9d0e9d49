//! Overload: a burst far above the sustainable rate waits in Kafka, not in
//! memory. The whole burst is in the topic before the topology starts; the
//! epoch count does not bind (1,000 epochs allowed in flight), only the
//! in-flight byte budget does: no worker ever holds more than the budget and
//! one epoch, lag shows while it catches up, and the feeds end exact.
#![cfg(all(feature = "kafka", feature = "server-tests"))]

mod common;

use std::time::{Duration, Instant};

use common::kafka::*;
use common::*;
use feedstorm::runtime::{RunOptions, Running};

#[test]
fn a_burst_waits_in_the_source_within_the_in_flight_budget() {
    let dir = tempfile::tempdir().unwrap();
    let lines = random_lines(
        93,
        Shape {
            events: 40_000,
            users: 60,
            things: 30,
            ids: 15_000,
            times: 5_000,
            spacing: 1_000,
        },
    );
    let topic = format!("overload-{}", std::process::id());
    create_topic(&topic, 4);
    produce_paced(&topic, &lines, lines.len(), Duration::ZERO);
    let mut topology = kafka_topology(&topic, &topic, dir.path());
    let (budget, epoch_events) = (64 << 10, 500);
    topology.input.max_inflight_bytes = budget;
    topology.input.max_inflight_epochs = 1_000;
    topology.input.epoch_events = epoch_events;
    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    let mut most_behind = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(running.status.caught_up() && running.status.events_in() >= lines.len() as u64) {
        assert!(
            Instant::now() < deadline,
            "not caught up: {} read",
            running.status.events_in()
        );
        most_behind = most_behind.max(running.status.lag().values().sum::<u64>());
        std::thread::sleep(Duration::from_millis(5));
    }
    // An event here holds at most about 600 bytes (ids, a verb, 96 of overhead).
    let bound = budget + epoch_events as u64 * 600;
    let peak = running.status.bytes_in_flight_peak();
    eprintln!(
        "burst of {}: peak {peak} bytes in flight on a worker (budget {budget}, bound {bound}); \
         most behind {most_behind} messages",
        lines.len()
    );
    assert!(
        peak > 0 && peak <= bound,
        "peak {peak} bytes in flight, bound {bound}"
    );
    assert!(most_behind > 0, "the lag never showed");
    assert_eq!(running.status.events_in(), lines.len() as u64);
    assert_heads("after the burst", &running, &topology, &lines);
    running.stop().unwrap();
}
