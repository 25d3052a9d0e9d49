//! The Redis sink against real redis-servers started by scripts/servers.sh:
//! a single server, a 3-master Redis Cluster, and a server with TLS and a
//! password (see common/redis_target.rs). A test that cannot reach its
//! server fails: it does not skip. Only with `--features server-tests`
//! (scripts/test.sh turns it on).
#![cfg(feature = "server-tests")]

mod common;

use std::time::{Duration, Instant};

use common::redis_target::{self, Target};
use common::*;
use feedstorm::config::{FeedConfig, RedisSinkConfig, SinkConfig, TopologyConfig, NOTIFICATIONS};
use feedstorm::runtime::{RunOptions, Running};
use serde_json::Value;

/// Tight digest bounds, so that the heads' limits are exercised.
fn small_digests(topology: &mut TopologyConfig) {
    topology.digests =
        vec![toml::from_str("max_actors = 2\nmax_activities = 3\ndigest_size = 4").unwrap()];
    topology.notifications =
        toml::from_str("max_actors = 2\nmax_activities = 2\ndigest_size = 3").unwrap();
}

#[test]
fn feeds_in_redis_equal_the_reference_through_http_and_a_plain_client() {
    feeds_equal_the_reference(redis_target::single());
}

#[test]
fn feeds_in_a_redis_cluster_equal_the_reference_through_http_and_a_cluster_client() {
    feeds_equal_the_reference(redis_target::cluster());
}

/// `rediss://` with a password in the URL and the test CA as `tls_ca_file`.
#[test]
fn feeds_in_redis_over_tls_with_a_password_equal_the_reference() {
    feeds_equal_the_reference(redis_target::tls());
}

/// `lines` in a file of a fresh directory, read by a following file
/// topology (`feed`) that writes to `target` under `prefix`.
fn into_redis(
    target: &Target,
    prefix: &str,
    lines: &[String],
    feed: FeedConfig,
) -> (tempfile::TempDir, std::path::PathBuf, TopologyConfig) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    write_lines(&path, lines);
    let mut topology = file_topology(&path, true, feed, dir.path());
    topology.sink = SinkConfig::Redis(target.sink(prefix));
    (dir, path, topology)
}

fn query<T: redis::FromRedisValue>(c: &mut dyn redis::ConnectionLike, cmd: &mut redis::Cmd) -> T {
    cmd.query(c).unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn feeds_equal_the_reference(target: Target) {
    let feed = FeedConfig {
        feed_size: 8,
        ..FeedConfig::default()
    };
    let lines = random_lines(
        61,
        Shape {
            events: 3_000,
            users: 30,
            things: 20,
            ids: 1_200,
            times: 400,
            spacing: 1_000,
        },
    );
    let prefix = target.prefix("exact");
    for workers in [1, 3] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        write_lines(&path, &lines);
        let mut topology = file_topology(&path, true, feed.clone(), dir.path());
        let mut sink = target.sink(&prefix);
        if workers == 3 {
            // Tiny pipelines: each epoch's writes are cut into many transactions.
            sink.pipeline = 5;
        }
        topology.sink = SinkConfig::Redis(sink);
        small_digests(&mut topology);
        let running = Running::start(&topology, &RunOptions::threads(workers)).unwrap();
        wait_caught_up(&running, lines.len() as u64);
        let run = format!("{workers} workers");
        let expected = expected(&lines, &topology);
        for (name, digests) in &expected.digests {
            assert!(!digests.is_empty(), "{run}: no {name} digests to test");
        }
        // Directly, following the documented layout; then through the API.
        assert_redis_matches_reference(&target, &prefix, &lines, &topology, &run);
        assert_shown(
            &run,
            &expected,
            &read_over_http(&running, &topology, &lines),
        );
        // The bounds, the activities stored once, paging by cursor.
        let server = serve(&running, &topology, 1_000);
        target.with(|c| {
            for (name, digests) in &expected.digests {
                let size = if name == NOTIFICATIONS { 3 } else { 4 };
                for user in digests.keys() {
                    let zset = format!("{prefix}:digest:{name}:{{{user}}}");
                    let groups: usize = query(c, redis::cmd("ZCARD").arg(&zset));
                    assert!(groups <= size, "{zset} exceeds its head size");
                    let hash = format!("{prefix}:group:{name}:{{{user}}}");
                    let fields: usize = query(c, redis::cmd("HLEN").arg(&hash));
                    assert_eq!(fields, groups, "{hash}: stale groups");
                }
            }
            for (user, head) in &expected.heads {
                let key = format!("{prefix}:feed:{{{user}}}");
                assert!(query::<usize>(c, redis::cmd("ZCARD").arg(&key)) <= feed.feed_size);
                let first: String = query(
                    c,
                    redis::cmd("GET").arg(format!("{prefix}:activity:{}", head[0].id)),
                );
                let first: Value = serde_json::from_str(&first).unwrap();
                assert_eq!(first["id"], head[0].id.as_str());
                let want: Vec<String> = head.iter().map(|e| e.id.clone()).collect();
                assert_eq!(
                    paged_by_cursor(&server, user),
                    want,
                    "{run}: API feed of {user}, paged"
                );
            }
        });
        drop(server);
        running.stop().unwrap();
    }
}

/// `user`'s feed through the API, three entries a page, by cursor.
fn paged_by_cursor(server: &feedstorm::http::Server, user: &str) -> Vec<String> {
    let mut got = Vec::new();
    let mut cursor = String::new();
    loop {
        let url = format!(
            "http://{}/feeds/{}?limit=3{cursor}",
            server.addr,
            common::judge::path_of(user)
        );
        let body: Value = ureq::get(&url).call().unwrap().into_json().unwrap();
        got.extend(
            body["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned()),
        );
        match body["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return got,
        }
    }
}

/// A redis-server of the test's own, with an append-only file, stopped when dropped.
struct OwnRedis {
    port: u16,
    dir: tempfile::TempDir,
}

impl OwnRedis {
    fn new() -> OwnRedis {
        // A port the OS says is free right now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let redis = OwnRedis {
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        redis.start();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn reachable(&self) -> bool {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    fn start(&self) {
        let dir = self.dir.path().to_str().unwrap();
        let pidfile = self.dir.path().join("r.pid");
        let status = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
            ])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                dir,
            ])
            .args(["--daemonize", "yes", "--pidfile", pidfile.to_str().unwrap()])
            .status()
            .expect("redis-server is installed (scripts/servers.sh)");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.reachable() {
            assert!(
                Instant::now() < deadline,
                "redis on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("r.pid")) {
            std::process::Command::new("kill")
                .arg(pid.trim())
                .status()
                .unwrap();
        }
        while self.reachable() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn a_redis_restart_mid_stream_stalls_then_resumes_exactly() {
    let redis = OwnRedis::new();
    let dir = tempfile::tempdir().unwrap();
    let feed = FeedConfig {
        feed_size: 6,
        ..FeedConfig::default()
    };
    let lines = random_lines(
        62,
        Shape {
            events: 2_000,
            users: 25,
            things: 15,
            ids: 800,
            times: 300,
            spacing: 1_000,
        },
    );
    let (first, second) = lines.split_at(1_000);
    let path = dir.path().join("events.jsonl");
    write_lines(&path, first);
    let mut topology = file_topology(&path, true, feed.clone(), dir.path());
    topology.sink = SinkConfig::Redis(RedisSinkConfig::new(&redis.url(), "fs"));
    small_digests(&mut topology);
    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    wait_caught_up(&running, first.len() as u64);

    // Redis goes away (its append-only file keeps what it acknowledged)
    // while events arrive: the sink retries, the spouts stop pulling.
    redis.stop();
    append_lines(&path, second);
    let deadline = Instant::now() + Duration::from_secs(30);
    while running.status.healthy() {
        assert!(
            Instant::now() < deadline,
            "the sink never noticed redis was down"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !running.status.caught_up(),
        "nothing can be caught up while the sink is down"
    );
    redis.start();
    wait_caught_up(&running, lines.len() as u64);
    assert!(running.status.healthy());
    let own = Target {
        name: "own",
        url: redis.url(),
        cluster: false,
        ca: None,
    };
    assert_redis_matches_reference(&own, "fs", &lines, &topology, "after the outage");
    running.stop().unwrap();
}

#[test]
fn a_restarted_topology_serves_the_old_feeds_at_once_and_catches_up_exactly() {
    restart_serves_old_feeds_then_catches_up(redis_target::single());
}

#[test]
fn a_restarted_topology_on_a_redis_cluster_serves_the_old_feeds_and_catches_up_exactly() {
    restart_serves_old_feeds_then_catches_up(redis_target::cluster());
}

fn restart_serves_old_feeds_then_catches_up(target: Target) {
    let feed = FeedConfig {
        feed_size: 6,
        ..FeedConfig::default()
    };
    let shape = Shape {
        events: 6_000,
        users: 40,
        things: 20,
        ids: 2_500,
        times: 800,
        spacing: 1_000,
    };
    let lines = random_lines(63, shape);
    let (first, second) = lines.split_at(3_000);
    let prefix = target.prefix("restart");
    let (_dir, path, mut topology) = into_redis(&target, &prefix, first, feed.clone());
    small_digests(&mut topology);
    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    wait_caught_up(&running, first.len() as u64);
    assert_redis_matches_reference(&target, &prefix, first, &topology, "before the restart");
    let old = expected_heads(first, &feed);
    running.stop().unwrap();

    // More events arrive while it is down; a new process replays the file.
    append_lines(&path, second);
    let new = expected_heads(&lines, &feed);
    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    // Until it has caught up, every read finds the old head or the new one,
    // never a half-rebuilt one.
    let mut reads = 0;
    target.with(|c| {
        while !(running.status.events_in() == lines.len() as u64 && running.status.caught_up()) {
            for user in old.keys().chain(new.keys()) {
                let head = redis_head(c, &prefix, user);
                let (was, will) = (
                    old.get(user).cloned().unwrap_or_default(),
                    new.get(user).cloned().unwrap_or_default(),
                );
                assert!(
                    head == was || head == will,
                    "{user} read during recovery: {head:?}"
                );
                reads += 1;
            }
        }
    });
    assert!(reads > 0);
    wait_caught_up(&running, lines.len() as u64);
    // The recovered heads are written once the topology has caught up.
    let deadline = Instant::now() + Duration::from_secs(30);
    let users: Vec<&String> = old.keys().chain(new.keys()).collect();
    while target.with(|c| {
        users
            .iter()
            .any(|u| redis_head(c, &prefix, u) != new.get(*u).cloned().unwrap_or_default())
    }) {
        assert!(
            Instant::now() < deadline,
            "the restarted topology did not reach the exact state"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_redis_matches_reference(&target, &prefix, &lines, &topology, "after the restart");
    running.stop().unwrap();
}

/// `redis::cmd(name).arg(args...)` on a plain connection to `url`.
fn admin(url: &str, name: &str, args: &[&str]) {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    redis::cmd(name).arg(args).query::<()>(&mut c).unwrap();
}

#[test]
fn a_wrong_password_fails_at_start_and_a_revoked_one_stops_the_topology() {
    let redis = OwnRedis::new();
    admin(&redis.url(), "CONFIG", &["SET", "requirepass", "right"]);
    let with_password = |password: &str| {
        redis
            .url()
            .replace("redis://", &format!("redis://:{password}@"))
    };

    // At start: an error at once, saying why, instead of retrying for ever.
    let wrong = RedisSinkConfig::new(&with_password("wrong"), "fs");
    let error = feedstorm::store::RedisStore::open(&wrong)
        .err()
        .expect("a wrong password is refused");
    assert!(!error.is_retryable(), "{error}");
    assert!(error.to_string().to_lowercase().contains("pass"), "{error}");

    // A server that is down is no error at start: it may come back.
    let down = RedisSinkConfig::new("redis://127.0.0.1:1", "fs");
    assert!(feedstorm::store::RedisStore::open(&down).is_ok());

    // Running: the password changes and the connections drop. The sink
    // does not retry for ever: the topology stops as failed.
    let dir = tempfile::tempdir().unwrap();
    let lines = random_lines(
        63,
        Shape {
            events: 600,
            users: 10,
            things: 5,
            ids: 200,
            times: 100,
            spacing: 1_000,
        },
    );
    let (first, second) = lines.split_at(300);
    let path = dir.path().join("events.jsonl");
    write_lines(&path, first);
    let mut topology = file_topology(&path, true, FeedConfig::default(), dir.path());
    topology.sink = SinkConfig::Redis(RedisSinkConfig::new(&with_password("right"), "fs"));
    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    wait_caught_up(&running, first.len() as u64);
    let url = with_password("right");
    admin(&url, "CONFIG", &["SET", "requirepass", "revoked"]);
    admin(
        &with_password("revoked"),
        "CLIENT",
        &["KILL", "TYPE", "normal", "SKIPME", "yes"],
    );
    append_lines(&path, second);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !running.workers_returned() {
        assert!(
            Instant::now() < deadline,
            "the topology kept retrying a revoked password"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(running.status.failed(), "stopped, as failed");
    assert!(
        !running.status.caught_up(),
        "the new events were not acked as written"
    );
}

/// A resume from a checkpoint on Redis rewrites only the users written
/// since the checkpoint or changed by the events after it: the others'
/// heads are already what the checkpoint says. Every stored head gets an
/// extra member written behind the topology's back while it is down; the
/// one event after the checkpoint touches only a new user, so every
/// marker survives the restart (a full rewrite would delete them all), and
/// with the markers taken out again everything equals the reference.
#[test]
fn a_resume_from_a_checkpoint_rewrites_only_users_written_or_changed_since() {
    let target = redis_target::single();
    let feed = FeedConfig {
        feed_size: 6,
        ..FeedConfig::default()
    };
    let shape = Shape {
        events: 2_000,
        users: 30,
        things: 15,
        ids: 1_500,
        times: 800,
        spacing: 1_000,
    };
    let first = random_lines(64, shape);
    let prefix = target.prefix("resume-rewrites");
    let (dir, path, mut topology) = into_redis(&target, &prefix, &first, feed.clone());
    topology.checkpoint = feedstorm::config::CheckpointConfig {
        dir: dir.path().join("checkpoints"),
        interval: Duration::from_millis(100),
        keep: 2,
    };
    small_digests(&mut topology);
    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    wait_caught_up(&running, first.len() as u64);
    wait_for_a_checkpoint_of_everything(&running);
    // A clean stop checkpoints at the epoch it stops at.
    running.stop().unwrap();
    assert_redis_matches_reference(&target, &prefix, &first, &topology, "before the restart");

    let marker = "marker-not-from-the-topology";
    let feeds = target.keys(&format!("{prefix}:feed:*"));
    assert!(feeds.len() > 20, "most users have a head: {}", feeds.len());
    // And every stored activity's verb: the resume writes no activity again.
    let activities = target.keys(&format!("{prefix}:activity:*"));
    let verb = |json: &str| serde_json::from_str::<Value>(json).unwrap()["verb"].clone();
    target.with(|c| {
        for key in &activities {
            let json: String = redis::cmd("GET").arg(key).query(c).unwrap();
            let mut value: Value = serde_json::from_str(&json).unwrap();
            value["verb"] = marker.into();
            let _: () = redis::cmd("SET")
                .arg(key)
                .arg(value.to_string())
                .query(c)
                .unwrap();
        }
        for key in &feeds {
            let _: () = redis::cmd("ZADD")
                .arg(key)
                .arg(0)
                .arg(marker)
                .query(c)
                .unwrap();
        }
    });
    let newcomer = serde_json::json!({"type": "activity", "id": "after-the-checkpoint",
        "time": T0, "actor": "user:newcomer", "verb": "post", "object": "thing:brand-new"})
    .to_string();
    append_lines(&path, std::slice::from_ref(&newcomer));
    let lines: Vec<String> = first.iter().cloned().chain([newcomer]).collect();
    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    wait_caught_up(&running, 1);
    // The recovery writes once caught up: wait for the newcomer's head.
    let deadline = Instant::now() + Duration::from_secs(30);
    while target.with(|c| redis_head(c, &prefix, "user:newcomer").is_empty()) {
        assert!(Instant::now() < deadline, "the newcomer's head never came");
        std::thread::sleep(Duration::from_millis(10));
    }
    running.stop().unwrap();
    target.with(|c| {
        for key in &feeds {
            let score: Option<f64> = redis::cmd("ZSCORE").arg(key).arg(marker).query(c).unwrap();
            assert_eq!(score, Some(0.0), "{key} was rewritten");
            let _: () = redis::cmd("ZREM").arg(key).arg(marker).query(c).unwrap();
        }
        for key in &activities {
            let json: String = redis::cmd("GET").arg(key).query(c).unwrap();
            assert_eq!(verb(&json), marker, "{key} was written again");
        }
    });
    assert_redis_matches_reference(&target, &prefix, &lines, &topology, "after the restart");
}

/// Copies directory `from` into `to`, recursively.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The store ran ahead of the checkpoint a resume starts from: a user was
/// written after it, by a change the resumed run never sees again (here
/// the source lost the event; a replay that nets a change out within one
/// epoch has the same effect). The resume rewrites that user because the
/// store recorded the write: the stale head goes.
#[test]
fn a_resume_rewrites_a_user_the_store_wrote_after_the_checkpoint() {
    resume_rewrites_a_user_written_after_the_checkpoint(redis_target::single(), false);
}

#[test]
fn a_resume_on_a_redis_cluster_rewrites_a_user_the_store_wrote_after_the_checkpoint() {
    resume_rewrites_a_user_written_after_the_checkpoint(redis_target::cluster(), false);
}

/// As above, but the run went on past the checkpoint the resume starts
/// from, to newer checkpoints that let the store forget the ghost's
/// write (as a restore of an older copy of the checkpoints does). The
/// store knows what it forgot: the resume rewrites every user. Fails if
/// the resume trusts the trimmed record (this flaked the cluster test
/// above when a checkpoint fell between the ghost's write and the stop).
#[test]
fn a_resume_from_a_checkpoint_older_than_the_record_of_writes_rewrites_every_user() {
    resume_rewrites_a_user_written_after_the_checkpoint(redis_target::single(), true);
}

fn resume_rewrites_a_user_written_after_the_checkpoint(target: Target, forgotten: bool) {
    let feed = FeedConfig {
        feed_size: 6,
        ..FeedConfig::default()
    };
    let shape = Shape {
        events: 1_000,
        users: 20,
        things: 10,
        ids: 800,
        times: 800,
        spacing: 1_000,
    };
    let lines = random_lines(65, shape);
    let prefix = target.prefix("resume-written");
    let (dir, path, mut topology) = into_redis(&target, &prefix, &lines, feed);
    let checkpoints = dir.path().join("checkpoints");
    topology.checkpoint = feedstorm::config::CheckpointConfig {
        dir: checkpoints.clone(),
        interval: Duration::from_millis(100),
        keep: 2,
    };
    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    wait_caught_up(&running, lines.len() as u64);
    wait_for_a_checkpoint_of_everything(&running);
    // The checkpoints as a crash right now would leave them.
    let kept = dir.path().join("kept");
    copy_dir(&checkpoints, &kept);
    let ghost = serde_json::json!({"type": "activity", "id": "lost-after-the-checkpoint",
        "time": T0, "actor": "user:ghost", "verb": "post", "object": "thing:ghost"})
    .to_string();
    append_lines(&path, std::slice::from_ref(&ghost));
    let deadline = Instant::now() + Duration::from_secs(30);
    while target.with(|c| redis_head(c, &prefix, "user:ghost").is_empty()) {
        assert!(
            Instant::now() < deadline,
            "the ghost's head was never written"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    if forgotten {
        let written = format!("{prefix}:written");
        let recorded = |c: &mut dyn redis::ConnectionLike| {
            query::<Option<f64>>(c, redis::cmd("ZSCORE").arg(&written).arg("user:ghost"))
        };
        assert!(
            target.with(recorded).is_some(),
            "the ghost's write not recorded"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while target.with(recorded).is_some() {
            assert!(
                Instant::now() < deadline,
                "the ghost's write never forgotten"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    running.stop().unwrap();
    std::fs::remove_dir_all(&checkpoints).unwrap();
    std::fs::rename(&kept, &checkpoints).unwrap();
    write_lines(&path, &lines);

    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    wait_caught_up(&running, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while target.with(|c| !redis_head(c, &prefix, "user:ghost").is_empty()) {
        assert!(
            Instant::now() < deadline,
            "the ghost's head, written after the checkpoint, stayed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    running.stop().unwrap();
    assert_redis_matches_reference(&target, &prefix, &lines, &topology, "after the resume");
}

/// A run that crashed stored an activity whose delete the source also
/// holds. The next run reads both in one epoch: the delete wins, so the
/// activity is never kept, and the stored copy must still go (a deleted
/// activity's text must not outlive it). Fails if only kept activities
/// are removed.
#[test]
fn a_delete_removes_an_activity_a_crashed_run_stored() {
    let target = redis_target::single();
    let prefix = target.prefix("orphan");
    let lines: Vec<String> = [
        r#"{"type":"follow","time":1,"user":"user:a","interest":"user:b"}"#,
        r#"{"type":"activity","id":"gone","time":2,"actor":"user:b","verb":"post","object":"listing:x"}"#,
        r#"{"type":"delete","time":3,"id":"gone"}"#,
        r#"{"type":"activity","id":"kept","time":4,"actor":"user:b","verb":"post","object":"listing:y"}"#,
    ]
    .map(String::from)
    .to_vec();
    let gone = format!("{prefix}:activity:gone");
    let kept = format!("{prefix}:activity:kept");
    target.with(|c| {
        let stored = r#"{"id":"gone","time":"1970-01-01T00:00:00.002Z","actor":"user:b","verb":"post","object":"listing:x"}"#;
        query::<()>(c, redis::cmd("SET").arg(&gone).arg(stored));
    });
    let (_dir, _path, topology) = into_redis(&target, &prefix, &lines, FeedConfig::default());
    let running = Running::start(&topology, &RunOptions::threads(2)).unwrap();
    wait_caught_up(&running, lines.len() as u64);
    target.with(|c| {
        assert_eq!(query::<u32>(c, redis::cmd("EXISTS").arg(&kept)), 1);
        assert_eq!(
            query::<u32>(c, redis::cmd("EXISTS").arg(&gone)),
            0,
            "the deleted activity a crashed run stored is still there"
        );
    });
    running.stop().unwrap();
}
