//! The worker cluster: `feedstorm run --processes N --process I --hosts
//! HOSTS` processes on loopback, read back the way a user would (HTTP, and a
//! plain Redis client following the documented layout) and compared with the
//! reference model. The Kafka tests use the broker and Redis started by
//! scripts/servers.sh; they fail, not skip, without them.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use feedstorm::config::TopologyConfig;

/// One `feedstorm run` process of a cluster.
struct Process {
    child: Child,
    log: PathBuf,
    addr: String,
}

impl Drop for Process {
    /// A failing test must not leave its children running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    fn status(&self) -> Option<serde_json::Value> {
        ureq::get(&format!("http://{}/status", self.addr))
            .call()
            .ok()?
            .into_json()
            .ok()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(30).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Waits for the process to exit by itself.
    #[cfg(all(feature = "kafka", feature = "server-tests"))]
    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process {} did not exit within {within:?}:\n{}",
                self.addr,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A hosts file of `processes` free loopback ports.
fn hosts_file(dir: &Path, processes: usize) -> PathBuf {
    let path = dir.join("hosts.txt");
    let lines: Vec<String> = (0..processes)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// Starts process `process` of `processes` x `workers` on `hosts`.
fn start(
    topology: &Path,
    hosts: &Path,
    (processes, process, workers): (usize, usize, usize),
    run: &str,
) -> Process {
    let port = free_port();
    let log = topology.with_file_name(format!("{run}-p{process}.log"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_feedstorm"));
    command
        .args(["run"])
        .arg(topology)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--workers", &workers.to_string()]);
    if processes > 1 {
        command
            .args(["--processes", &processes.to_string()])
            .args(["--process", &process.to_string()])
            .arg("--hosts")
            .arg(hosts);
    }
    let child = command
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Process {
        child,
        log,
        addr: format!("127.0.0.1:{port}"),
    }
}

/// Starts every process of a cluster of `processes` x `workers`.
fn start_cluster(
    topology: &Path,
    hosts: &Path,
    (processes, workers): (usize, usize),
    run: &str,
) -> Vec<Process> {
    (0..processes)
        .map(|p| start(topology, hosts, (processes, p, workers), run))
        .collect()
}

/// Waits until every process is caught up and together they read `events`.
fn wait_caught_up_together(cluster: &[Process], events: i64, within: Duration) -> i64 {
    let deadline = Instant::now() + within;
    loop {
        let statuses: Vec<Option<serde_json::Value>> =
            cluster.iter().map(Process::status).collect();
        let read: i64 = statuses
            .iter()
            .flatten()
            .map(|s| s["events_in"].as_i64().unwrap_or(0))
            .sum();
        let caught_up = statuses
            .iter()
            .all(|s| s.as_ref().is_some_and(|s| s["caught_up"] == true));
        if caught_up && read >= events {
            return read;
        }
        assert!(
            Instant::now() < deadline,
            "not caught up: {read} of {events} read; {statuses:?}\n{}",
            cluster
                .iter()
                .map(Process::log_tail)
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn write_toml(dir: &Path, name: &str, toml: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::File::create(&path)
        .unwrap()
        .write_all(toml.as_bytes())
        .unwrap();
    path
}

fn get_json(addr: &str, path: &str) -> serde_json::Value {
    ureq::get(&format!("http://{addr}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path} at {addr}: {e}"))
        .into_json()
        .unwrap()
}

fn rebuild(addr: &str, user: &str) -> serde_json::Value {
    ureq::post(&format!("http://{addr}/drpc/rebuild-feed"))
        .send_json(serde_json::json!({ "user": user }))
        .unwrap_or_else(|e| panic!("rebuild {user} at {addr}: {e}"))
        .into_json()
        .unwrap()
}

/// The entry ids of a feed answer.
fn ids(answer: &serde_json::Value) -> Vec<String> {
    answer["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every user the reference knows, read and rebuilt through every process
/// (so also through processes that do not own them): each answer equals the
/// reference head.
fn assert_every_process_answers_for_every_user(
    cluster: &[Process],
    expected: &judge::Heads,
    feed_size: usize,
) {
    for (user, head) in expected {
        let want: Vec<String> = head.iter().map(|e| e.id.clone()).collect();
        let path = format!("/feeds/{}?limit={feed_size}", judge::path_of(user));
        for process in cluster {
            let read = get_json(&process.addr, &path);
            assert_eq!(ids(&read), want, "GET {path} at {}", process.addr);
            let rebuilt = rebuild(&process.addr, user);
            assert_eq!(ids(&rebuilt), want, "rebuild {user} at {}", process.addr);
        }
    }
}

/// With the embedded store each process holds its own users' feeds: reads
/// and rebuilds through either process of 2 x 2 are right for every user.
#[test]
fn an_embedded_cluster_of_2_processes_answers_for_every_user_through_either() {
    let dir = tempfile::tempdir().unwrap();
    let lines = random_lines(
        81,
        Shape {
            events: 3_000,
            users: 30,
            things: 20,
            ids: 1_200,
            times: 400,
            spacing: 1_000,
        },
    );
    let events_path = dir.path().join("events.jsonl");
    write_lines(&events_path, &lines);
    let toml = format!(
        r#"name = "embedded-cluster"
[[spout]]
type = "file"
path = "{events}"
[feed]
feed_size = 30
[dead_letter]
path = "{dead}"
[checkpoint]
interval = "0s"
"#,
        events = events_path.display(),
        dead = dir.path().join("dead.jsonl").display(),
    );
    let topology_path = write_toml(dir.path(), "embedded", &toml);
    let hosts = hosts_file(dir.path(), 2);
    let cluster = start_cluster(&topology_path, &hosts, (2, 2), "embedded");
    wait_caught_up_together(&cluster, lines.len() as i64, Duration::from_secs(60));
    let topology: TopologyConfig = toml::from_str(&toml).unwrap();
    let expected = expected_heads(&lines, &topology.feed);
    assert_every_process_answers_for_every_user(&cluster, &expected, topology.feed.feed_size);
    assert_streams_open_through_either_process(&cluster, &expected);
    // Each process shows the whole cluster: both processes, their workers
    // and where they answer.
    for (at, process) in cluster.iter().enumerate() {
        let shown = get_json(&process.addr, "/api/v1/topology");
        assert_eq!(shown["cluster"]["process"], at);
        let processes = shown["cluster"]["processes"].as_array().unwrap();
        let workers: Vec<&serde_json::Value> = processes.iter().map(|p| &p["workers"]).collect();
        assert_eq!(
            workers,
            [&serde_json::json!([0, 1]), &serde_json::json!([2, 3])]
        );
        for (p, peer) in processes.iter().enumerate() {
            assert_eq!(peer["http"], cluster[p].addr.as_str());
        }
    }
}

/// A stream opened through the process that does not own the user is
/// redirected (307) to the one that does; followed, its snapshot is the
/// reference's first page.
fn assert_streams_open_through_either_process(cluster: &[Process], expected: &judge::Heads) {
    let no_redirects = ureq::AgentBuilder::new().redirects(0).build();
    let mut redirected = 0;
    for (user, head) in expected.iter().take(8) {
        let want: Vec<String> = head.iter().take(5).map(|e| e.id.clone()).collect();
        for process in cluster {
            let path = format!("/feeds/{user}/stream?limit=5");
            let first = no_redirects
                .get(&format!("http://{}{path}", process.addr))
                .call()
                .unwrap();
            if first.status() == 307 {
                redirected += 1;
                let location = first.header("location").unwrap().to_owned();
                let owner = cluster
                    .iter()
                    .find(|p| location == format!("http://{}{path}", p.addr));
                assert!(owner.is_some(), "redirected to {location}");
            }
            let answer = ureq::get(&format!("http://{}{path}", process.addr))
                .call()
                .unwrap();
            let mut lines = std::io::BufRead::lines(std::io::BufReader::new(answer.into_reader()));
            assert_eq!(lines.next().unwrap().unwrap(), "event: snapshot");
            let data = lines.next().unwrap().unwrap();
            let snapshot: serde_json::Value =
                serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            let ids: Vec<&str> = snapshot["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap())
                .collect();
            assert_eq!(ids, want, "{user} streamed through {}", process.addr);
        }
    }
    assert!(redirected > 0, "every user owned by both processes?");
}

#[cfg(all(feature = "kafka", feature = "server-tests"))]
mod kafka {
    use std::collections::BTreeMap;

    use super::*;
    use common::kafka::*;
    use feedstorm::config::FeedConfig;

    /// A topic of the test's own with `partitions`.
    fn topic(name: &str, partitions: i32) -> String {
        let topic = format!("cluster-{name}-{}-{partitions}", std::process::id());
        create_topic(&topic, partitions);
        topic
    }

    fn produce(topic: &str, lines: &[String], per_chunk: usize, pause: Duration) {
        produce_paced(topic, lines, per_chunk, pause)
    }

    /// What a 2-process Kafka -> Redis test runs on.
    struct Setup {
        topic: String,
        target: redis_target::Target,
        prefix: String,
        toml: String,
        path: PathBuf,
        hosts: PathBuf,
    }

    /// A topic of 4 partitions, a Redis prefix, the topology (checkpoints
    /// every 500 ms) and a hosts file of 2 processes, all named `name`.
    fn setup(name: &str, dir: &Path) -> Setup {
        let topic = topic(name, 4);
        let target = redis_target::single();
        let prefix = target.prefix(name);
        let toml = kafka_redis_toml(name, &topic, &topic, &prefix, &target.url, dir, "500ms");
        let path = write_toml(dir, name, &toml);
        let hosts = hosts_file(dir, 2);
        Setup {
            topic,
            target,
            prefix,
            toml,
            path,
            hosts,
        }
    }

    /// Events held by the newest checkpoint under `root` complete on every
    /// process: the sum of the Kafka offsets in its manifests (one per
    /// process, `MANIFEST-pI.json`), read as the README documents them.
    fn checkpointed_total(root: &Path, processes: usize) -> i64 {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        dirs.sort();
        dirs.iter()
            .rev()
            .find_map(|dir| {
                let mut total = 0;
                for p in 0..processes {
                    let text =
                        std::fs::read_to_string(dir.join(format!("MANIFEST-p{p}.json"))).ok()?;
                    let manifest: serde_json::Value = serde_json::from_str(&text).ok()?;
                    let next = manifest["sources"][0]["position"]["kafka"]["next"].as_object()?;
                    total += next.values().filter_map(|v| v.as_i64()).sum::<i64>();
                }
                Some(total)
            })
            .unwrap_or(0)
    }

    /// 2 processes x 2 workers, Kafka -> Redis: feeds, digests and
    /// notification feeds equal the reference and 1 process x 1 worker's;
    /// reads and rebuilds through each process are right for every user.
    #[test]
    fn two_processes_of_two_workers_equal_the_reference_and_one_process_of_one() {
        let dir = tempfile::tempdir().unwrap();
        let lines = random_lines(
            82,
            Shape {
                events: 4_000,
                users: 40,
                things: 25,
                ids: 1_500,
                times: 500,
                spacing: 1_000,
            },
        );
        let topic = topic("exact", 4);
        produce(&topic, &lines, 1_000, Duration::ZERO);
        let target = redis_target::single();
        for (processes, workers) in [(2, 2), (1, 1)] {
            let name = format!("exact{processes}x{workers}");
            let prefix = target.prefix(&name);
            let toml = kafka_redis_toml(
                &name,
                &topic,
                &format!("{topic}-{name}"),
                &prefix,
                &target.url,
                dir.path(),
                "500ms",
            );
            let path = write_toml(dir.path(), &name, &toml);
            let hosts = hosts_file(dir.path(), processes);
            let cluster = start_cluster(&path, &hosts, (processes, workers), &name);
            let read =
                wait_caught_up_together(&cluster, lines.len() as i64, Duration::from_secs(120));
            assert_eq!(read, lines.len() as i64, "{name}: read each event once");
            // Partition k goes to worker k mod all the cluster's workers.
            let mut spread: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for process in &cluster {
                let status = process.status().unwrap();
                for (worker, sources) in status["cluster"]["sources"].as_object().unwrap() {
                    for source in sources.as_array().unwrap() {
                        let source = source.as_str().unwrap().to_owned();
                        spread.entry(source).or_default().push(worker.clone());
                    }
                }
            }
            let want: BTreeMap<String, Vec<String>> = (0..4)
                .map(|k| {
                    (
                        format!("{topic}/{k}"),
                        vec![(k % (processes * workers)).to_string()],
                    )
                })
                .collect();
            assert_eq!(spread, want, "{name}: partitions by worker");
            let topology: TopologyConfig = toml::from_str(&toml).unwrap();
            assert_redis_matches_reference(&target, &prefix, &lines, &topology, &name);
            let expected = expected_heads(&lines, &FeedConfig::default());
            assert_every_process_answers_for_every_user(
                &cluster,
                &expected,
                topology.feed.feed_size,
            );
        }
    }

    /// SIGKILL one process of 2 mid-stream: the other exits non-zero within
    /// 10 s naming the lost peer; restarting both resumes from the newest
    /// checkpoint complete on both, reads exactly what followed it, and ends
    /// at the reference state.
    #[test]
    fn a_lost_process_stops_the_other_and_a_restart_resumes_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let lines = random_lines(
            83,
            Shape {
                events: 12_000,
                users: 50,
                things: 30,
                ids: 5_000,
                times: 2_000,
                spacing: 1_000,
            },
        );
        let Setup {
            topic,
            target,
            prefix,
            toml,
            path,
            hosts,
        } = setup("kill", dir.path());
        let (streamed, tail) = lines.split_at(lines.len() - 1_000);
        let producing = {
            let (topic, streamed) = (topic.clone(), streamed.to_vec());
            std::thread::spawn(move || produce(&topic, &streamed, 100, Duration::from_millis(100)))
        };
        let mut cluster = start_cluster(&path, &hosts, (2, 2), "first");
        // Mid-stream, once both processes have a durable checkpoint.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cluster.iter().all(|p| {
            p.status().is_some_and(|s| {
                s["checkpoint"]["last"].is_object() && s["events_in"].as_i64() > Some(0)
            })
        }) {
            assert!(Instant::now() < deadline, "no checkpoint on both processes");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(700));
        let mut killed = cluster.pop().unwrap();
        killed.child.kill().unwrap(); // SIGKILL
        killed.child.wait().unwrap();
        let exit = cluster[0].wait_exit(Duration::from_secs(10));
        assert!(
            !exit.success(),
            "the surviving process exits non-zero: {exit}"
        );
        let log = std::fs::read_to_string(&cluster[0].log).unwrap();
        assert!(
            log.contains("lost peer process 1"),
            "the message names the lost peer:\n{}",
            cluster[0].log_tail()
        );
        drop(cluster);
        let resumed_from = checkpointed_total(&dir.path().join("checkpoints").join("kill"), 2);
        let cluster = start_cluster(&path, &hosts, (2, 2), "second");
        producing.join().unwrap();
        produce(&topic, tail, 1_000, Duration::ZERO);
        let must_read = lines.len() as i64 - resumed_from;
        let read = wait_caught_up_together(&cluster, must_read, Duration::from_secs(180));
        assert_eq!(
            read, must_read,
            "the restart reads exactly what its checkpoint lacks"
        );
        let topology: TopologyConfig = toml::from_str(&toml).unwrap();
        assert_redis_matches_reference(
            &target,
            &prefix,
            &lines,
            &topology,
            "after losing a process",
        );
    }

    /// SIGTERM to one process of 2 stops both cleanly with a checkpoint of
    /// everything read; a restart reads nothing twice.
    #[test]
    fn sigterm_to_one_process_stops_the_cluster_with_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let lines = random_lines(
            84,
            Shape {
                events: 6_000,
                users: 40,
                things: 25,
                ids: 2_500,
                times: 800,
                spacing: 1_000,
            },
        );
        let Setup {
            topic,
            target,
            prefix,
            toml,
            path,
            hosts,
        } = setup("term", dir.path());
        let (first, second) = lines.split_at(3_500);
        produce(&topic, first, 1_000, Duration::ZERO);
        let mut cluster = start_cluster(&path, &hosts, (2, 2), "first");
        wait_caught_up_together(&cluster, first.len() as i64, Duration::from_secs(120));
        let pid = cluster[1].child.id().to_string();
        let signalled = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(signalled.success());
        for process in &mut cluster {
            let exit = process.wait_exit(Duration::from_secs(30));
            assert!(
                exit.success(),
                "a clean stop exits 0: {exit}\n{}",
                process.log_tail()
            );
        }
        let held = checkpointed_total(&dir.path().join("checkpoints").join("term"), 2);
        assert_eq!(
            held,
            first.len() as i64,
            "the stop's checkpoint holds everything read"
        );
        drop(cluster);
        produce(&topic, second, 1_000, Duration::ZERO);
        let cluster = start_cluster(&path, &hosts, (2, 2), "second");
        let read = wait_caught_up_together(&cluster, second.len() as i64, Duration::from_secs(120));
        assert_eq!(read, second.len() as i64, "the restart reads nothing twice");
        let topology: TopologyConfig = toml::from_str(&toml).unwrap();
        assert_redis_matches_reference(&target, &prefix, &lines, &topology, "after a SIGTERM stop");
    }
}
