//! A Redis Cluster slot in the middle of a migration (`MIGRATING` on its
//! owner, `IMPORTING` on another master): the owner answers `ASK` for every
//! key it does not hold, and the sink must send those transactions to the
//! importing node after `ASKING`; reads (the API's, through the redis
//! crate's cluster client) must follow `ASK` too. Its own test binary, so
//! that no other test writes to the cluster while a slot moves. Only with
//! `--features server-tests`.
#![cfg(feature = "server-tests")]

mod common;

use common::redis_target;
use common::*;
use feedstorm::config::{FeedConfig, SinkConfig};
use feedstorm::runtime::{RunOptions, Running};

/// A master: its node id and address.
#[derive(Clone, Debug)]
struct Master {
    id: String,
    addr: String,
}

impl Master {
    fn connection(&self) -> redis::Connection {
        redis::Client::open(format!("redis://{}", self.addr))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        cmd.arg(&args[1..]);
        cmd.query(&mut self.connection())
            .unwrap_or_else(|e| panic!("{args:?} on {}: {e}", self.addr))
    }
}

fn masters(seed: &str) -> Vec<Master> {
    let mut c = redis::Client::open(seed).unwrap().get_connection().unwrap();
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut c).unwrap();
    nodes
        .lines()
        .filter(|line| line.split(' ').nth(2).is_some_and(|f| f.contains("master")))
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            Master {
                id: fields[0].to_owned(),
                addr: fields[1].split('@').next().unwrap().to_owned(),
            }
        })
        .collect()
}

/// Ends the migration of `slot` from `source` to `importing` however the
/// test ends: the keys the source still holds in it move, then every
/// master learns the slot's new owner.
struct Migration {
    slot: u16,
    source: Master,
    importing: Master,
    all: Vec<Master>,
}

impl Drop for Migration {
    fn drop(&mut self) {
        let slot = self.slot.to_string();
        loop {
            let keys: Vec<String> = self.source.cmd(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
            if keys.is_empty() {
                break;
            }
            let (host, port) = self.importing.addr.rsplit_once(':').unwrap();
            let mut args = vec!["MIGRATE", host, port, "", "0", "5000", "REPLACE", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            self.source.cmd::<()>(&args);
        }
        for master in &self.all {
            master.cmd::<()>(&["CLUSTER", "SETSLOT", &slot, "NODE", &self.importing.id]);
        }
    }
}

#[test]
fn writes_and_reads_follow_ask_while_a_slot_migrates() {
    let target = redis_target::cluster();
    let prefix = target.prefix("ask");
    let all = masters(&target.url);
    assert!(all.len() >= 2, "a cluster of at least two masters");
    // The busiest user's slot moves while the topology writes to it.
    let lines = random_lines(
        91,
        Shape {
            events: 2_000,
            users: 6,
            things: 4,
            ids: 600,
            times: 200,
            spacing: 60_000,
        },
    );
    let feed = FeedConfig {
        feed_size: 8,
        ..FeedConfig::default()
    };
    let heads = expected_heads(&lines, &feed);
    let (user, _) = heads.iter().max_by_key(|(_, head)| head.len()).unwrap();
    let slot: u16 = all[0].cmd(&["CLUSTER", "KEYSLOT", user]);
    let owner_id = {
        let mut c = all[0].connection();
        let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut c).unwrap();
        let owner = slots
            .iter()
            .find_map(|range| {
                let redis::Value::Array(range) = range else {
                    return None;
                };
                let first: u16 = redis::from_redis_value(range[0].clone()).ok()?;
                let last: u16 = redis::from_redis_value(range[1].clone()).ok()?;
                let redis::Value::Array(master) = &range[2] else {
                    return None;
                };
                (first..=last).contains(&slot).then(|| {
                    let port: u16 = redis::from_redis_value(master[1].clone()).unwrap();
                    port
                })
            })
            .expect("an owner");
        owner
    };
    let source = all
        .iter()
        .find(|m| m.addr.ends_with(&format!(":{owner_id}")))
        .unwrap()
        .clone();
    let importing = all.iter().find(|m| m.id != source.id).unwrap().clone();
    let slot_text = slot.to_string();
    importing.cmd::<()>(&["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &source.id]);
    source.cmd::<()>(&["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &importing.id]);
    let _migration = Migration {
        slot,
        source: source.clone(),
        importing: importing.clone(),
        all: all.clone(),
    };

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    write_lines(&path, &lines);
    let mut topology = file_topology(&path, true, feed.clone(), dir.path());
    topology.sink = SinkConfig::Redis(target.sink(&prefix));
    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    wait_caught_up(&running, lines.len() as u64);
    assert!(running.status.healthy());

    // The moving user's keys went to the importing node, none to the source.
    let feed_key = format!("{prefix}:feed:{{{user}}}");
    // The migrating node answers ASK for a key it does not hold.
    let on_source = redis::cmd("EXISTS")
        .arg(&feed_key)
        .query::<i64>(&mut source.connection());
    assert!(
        matches!(&on_source, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::Ask)),
        "{feed_key} on the migrating node: {on_source:?}"
    );
    let mut asking = importing.connection();
    redis::cmd("ASKING").query::<()>(&mut asking).unwrap();
    let on_importing: i64 = redis::cmd("EXISTS")
        .arg(&feed_key)
        .query(&mut asking)
        .unwrap();
    assert_eq!(on_importing, 1, "{feed_key} not on the importing node");

    // Read back by an app: the redis crate's cluster client and the API.
    assert_redis_matches_reference(&target, &prefix, &lines, &topology, "during the migration");
    assert_shown(
        "through the API during the migration",
        &expected(&lines, &topology),
        &read_over_http(&running, &topology, &lines),
    );
    running.stop().unwrap();
}
