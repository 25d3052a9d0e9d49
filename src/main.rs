//! The `feedstorm` command: a thin shell over the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use tokio::signal::unix::SignalKind;

use feedstorm::cluster::Cluster;
use feedstorm::config::{
    ClusterConfig, FileSpoutConfig, GeneratorConfig, ProcessConfig, SpoutConfig, TopologyConfig,
};
use feedstorm::http::{Api, Server};
use feedstorm::runtime::{RunOptions, Running};

#[cfg(feature = "bench")]
#[path = "cli/bench.rs"]
mod bench;

/// feedstorm: activity feeds as a Storm-like topology on timely dataflow.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Process-wide settings (listen address, workers, log level).
    #[arg(long, global = true, default_value = "config/default.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a topology and serve its HTTP API.
    Run {
        /// The topology file (see topologies/).
        topology: PathBuf,
        /// Read events from this JSONL file instead of the topology's spouts.
        #[arg(long)]
        input: Option<PathBuf>,
        /// HTTP address (default from the config file: 127.0.0.1:7070).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Worker threads (default from the config file).
        #[arg(long)]
        workers: Option<usize>,
        #[command(flatten)]
        cluster: ClusterFlags,
    },
    /// Print a user's feed from a running topology.
    Feed {
        /// The user, a typed id such as user:rob.
        user: String,
        /// Address of the running topology's HTTP API.
        #[arg(long, default_value = "127.0.0.1:7070")]
        server: String,
        /// Entries to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Continue after this cursor (from a previous page's next_cursor).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Rebuild a user's feed inside the running topology (DRPC) and print it.
    Rebuild {
        /// The user, a typed id such as user:rob.
        user: String,
        /// Address of the running topology's HTTP API.
        #[arg(long, default_value = "127.0.0.1:7070")]
        server: String,
    },
    /// Write the generator's workload as JSONL (for --input or producers).
    Generate {
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        workload: Workload,
    },
    /// Publish events to a Kafka topic, keyed by actor (activities), user
    /// (follows and blocks) or activity id (deletes), with a progress bar and
    /// a final rate.
    #[cfg(feature = "kafka")]
    Produce(ProduceArgs),
    /// Look at checkpoints.
    Checkpoint {
        #[command(subcommand)]
        command: CheckpointCommand,
    },
    /// Measure throughput, memory and rebuild latency on a generated workload.
    ///
    /// Without --materialize, runs `all` and `active` each in a child process
    /// (so that their peak memory is their own) and prints both and the ratio.
    #[cfg(feature = "bench")]
    Bench(bench::BenchArgs),
}

/// `feedstorm produce`: where to, and what.
#[cfg(feature = "kafka")]
#[derive(clap::Args)]
struct ProduceArgs {
    /// Bootstrap brokers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// The topic (it must exist).
    #[arg(long)]
    topic: String,
    /// A JSONL file of events (lines that do not decode are produced as
    /// they are, to exercise dead letters).
    #[arg(
        long,
        required_unless_present = "generate",
        conflicts_with = "generate"
    )]
    file: Option<PathBuf>,
    /// Produce the generator's workload (the demo's; see the workload options).
    #[arg(long)]
    generate: bool,
    #[command(flatten)]
    workload: Workload,
    /// Refuse lines larger than this (match the topology's
    /// `max_event_bytes`: consumers never fetch a message that is too large).
    #[arg(long, default_value_t = 1 << 20)]
    max_event_bytes: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// `feedstorm checkpoint ...`
#[derive(Subcommand)]
enum CheckpointCommand {
    /// List the checkpoints in DIR (a `[checkpoint] dir`, or one topology's
    /// directory under it): epoch, time, spout positions and part sizes.
    Inspect {
        /// The directory.
        dir: std::path::PathBuf,
    },
}

/// This process's place in a worker cluster (default: `[cluster]` in the
/// config file, else a cluster of one). Every process runs the same topology
/// with the same `--workers`.
#[derive(clap::Args)]
struct ClusterFlags {
    /// Processes in the cluster.
    #[arg(long, requires_all = ["process", "hosts"])]
    processes: Option<usize>,
    /// This process, from 0 (it listens on line I of HOSTS).
    #[arg(long, value_name = "I", requires = "processes")]
    process: Option<usize>,
    /// Timely's hosts file: one `host:port` a line, for the dataflow's traffic.
    #[arg(long, value_name = "HOSTS", requires = "processes")]
    hosts: Option<PathBuf>,
}

impl ClusterFlags {
    /// The flags over the config file's `[cluster]`.
    fn resolve(self, process: &ProcessConfig, workers: usize) -> anyhow::Result<Cluster> {
        let config = match (self.processes, self.process, self.hosts) {
            (Some(processes), Some(process), Some(hosts)) => Some(ClusterConfig {
                processes,
                process,
                hosts,
            }),
            _ => process.cluster.clone(),
        };
        Ok(match config {
            Some(config) => Cluster::from_config(&config, workers)?,
            None => Cluster::single(workers),
        })
    }
}

/// The generated workload's shape.
#[derive(clap::Args)]
struct Workload {
    /// Seed of the generator: the same seed gives the same workload.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Distinct users (`user:u0`, `user:u1`, ...) who follow and act.
    #[arg(long, default_value_t = 10_000)]
    users: u64,
    /// Distinct listings (`listing:l0`, ...): things users follow and act on.
    #[arg(long, default_value_t = 5_000)]
    listings: u64,
    /// Follow events building the initial graph.
    #[arg(long, default_value_t = 1_000_000)]
    follows: u64,
    /// Events after the graph (mostly activities).
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Zipf-like skew of who is followed and who acts (0 = uniform; higher
    /// concentrates followers on a few celebrities).
    #[arg(long, default_value_t = 1.5)]
    skew: f64,
    /// Share of events after the graph that are unfollows.
    #[arg(long, default_value_t = 0.05)]
    unfollow_share: f64,
    /// Share of events after the graph that are deletes.
    #[arg(long, default_value_t = 0.03)]
    delete_share: f64,
    /// Share of events that arrive late.
    #[arg(long, default_value_t = 0.0)]
    late_share: f64,
    /// How late a late event is at most (`12h`).
    #[arg(long, default_value = "12h", value_parser = humantime::parse_duration)]
    late_by: std::time::Duration,
    /// Feed retention (`[feed] retention`). Events are 100 ms apart, so a
    /// retention shorter than the run shows memory bounded by the window.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    retention: std::time::Duration,
}

impl Workload {
    fn config(&self) -> GeneratorConfig {
        GeneratorConfig {
            seed: self.seed,
            users: self.users,
            listings: self.listings,
            follows: self.follows,
            events: Some(self.events),
            rate: None,
            step_ms: 100,
            skew: self.skew,
            unfollow_share: self.unfollow_share,
            delete_share: self.delete_share,
            late_share: self.late_share,
            late_by: self.late_by,
            ..GeneratorConfig::default()
        }
    }

    /// The flags that give the same workload to a child process.
    #[cfg(feature = "bench")]
    fn args(&self) -> Vec<String> {
        let flags: [(&str, String); 11] = [
            ("--seed", self.seed.to_string()),
            ("--users", self.users.to_string()),
            ("--listings", self.listings.to_string()),
            ("--follows", self.follows.to_string()),
            ("--events", self.events.to_string()),
            ("--skew", self.skew.to_string()),
            ("--unfollow-share", self.unfollow_share.to_string()),
            ("--delete-share", self.delete_share.to_string()),
            ("--late-share", self.late_share.to_string()),
            (
                "--late-by",
                humantime::format_duration(self.late_by).to_string(),
            ),
            (
                "--retention",
                humantime::format_duration(self.retention).to_string(),
            ),
        ];
        flags
            .into_iter()
            .flat_map(|(flag, value)| [flag.to_owned(), value])
            .collect()
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let process = if cli.config.exists() {
        ProcessConfig::load(&cli.config)?
    } else {
        ProcessConfig::default()
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| process.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();

    match cli.command {
        Command::Run {
            topology,
            input,
            listen,
            workers,
            cluster,
        } => {
            let cluster = cluster.resolve(&process, workers.unwrap_or(process.workers))?;
            run(&process, &topology, input, listen, cluster)
        }
        Command::Feed {
            user,
            server,
            limit,
            cursor,
        } => feed(&user, &server, limit, cursor.as_deref()),
        Command::Rebuild { user, server } => rebuild(&user, &server),
        Command::Generate { out, workload } => generate(&out, &workload),
        #[cfg(feature = "kafka")]
        Command::Produce(args) => produce(args),
        Command::Checkpoint {
            command: CheckpointCommand::Inspect { dir },
        } => {
            print!("{}", feedstorm::checkpoint::inspect(&dir)?);
            Ok(())
        }
        #[cfg(feature = "bench")]
        Command::Bench(args) => bench::bench(args),
    }
}

/// `feedstorm feed`: a page of a user's feed, from a running topology.
fn feed(user: &str, server: &str, limit: usize, cursor: Option<&str>) -> anyhow::Result<()> {
    let user = percent_encoding::utf8_percent_encode(user, percent_encoding::NON_ALPHANUMERIC);
    let mut request =
        ureq::get(&format!("http://{server}/feeds/{user}")).query("limit", &limit.to_string());
    if let Some(cursor) = cursor {
        request = request.query("cursor", cursor);
    }
    print_answer(request.call(), server)
}

/// `feedstorm rebuild`: a user's feed rebuilt by the running topology.
fn rebuild(user: &str, server: &str) -> anyhow::Result<()> {
    let request = ureq::post(&format!("http://{server}/drpc/rebuild-feed"));
    print_answer(
        request.send_json(serde_json::json!({ "user": user })),
        server,
    )
}

/// Prints an API answer as pretty JSON; an error status is an error.
fn print_answer(answer: Result<ureq::Response, ureq::Error>, server: &str) -> anyhow::Result<()> {
    let body: serde_json::Value = match answer {
        Ok(response) => response.into_json()?,
        Err(ureq::Error::Status(code, response)) => {
            bail!("{code}: {}", response.into_string().unwrap_or_default())
        }
        Err(e) => return Err(e).context(format!("cannot reach {server}")),
    };
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}

/// `feedstorm generate`: the generator's workload as JSONL.
fn generate(out: &std::path::Path, workload: &Workload) -> anyhow::Result<()> {
    use std::io::Write;
    let config = workload.config();
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    for event in feedstorm::spout::Generator::sequence(&config) {
        writeln!(file, "{}", feedstorm::event::encode(&event))?;
    }
    file.flush()?;
    Ok(())
}

/// `feedstorm produce`: a file or the generator's workload into a topic.
#[cfg(feature = "kafka")]
fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    use feedstorm::kafka::produce;
    let ProduceArgs {
        brokers,
        topic,
        file,
        generate,
        workload,
        max_event_bytes,
        quiet,
    } = args;
    let producer = feedstorm::kafka::Producer::new(&brokers, &Default::default())?;
    let produced = match file {
        Some(path) if !generate => {
            produce::produce_file(&producer, &topic, &path, max_event_bytes, !quiet)
        }
        _ => {
            let config = workload.config();
            let events = feedstorm::spout::Generator::sequence(&config);
            let total = feedstorm::spout::Generator::total(&config);
            produce::produce_events(&producer, &topic, events, total, max_event_bytes, !quiet)
        }
    }
    .with_context(|| format!("producing to {topic} at {brokers}"))?;
    let refused = if produced.refused > 0 {
        format!(
            " ({} refused: larger than --max-event-bytes)",
            produced.refused
        )
    } else {
        String::new()
    };
    println!(
        "produced {} events to {topic} in {:.2} s: {:.0} events/s{refused}",
        produced.messages,
        produced.seconds,
        produced.rate(),
    );
    Ok(())
}

/// `feedstorm run`: starts the topology and its HTTP API, and runs until a
/// signal (or another process of the cluster) stops it.
fn run(
    process: &ProcessConfig,
    topology_path: &std::path::Path,
    input: Option<PathBuf>,
    listen: Option<SocketAddr>,
    cluster: Cluster,
) -> anyhow::Result<()> {
    let mut topology = TopologyConfig::load(topology_path)?;
    if let Some(path) = input {
        topology.spouts = vec![SpoutConfig::File(FileSpoutConfig {
            path,
            follow: false,
        })];
    }
    let (running, server) = start(process, &topology, listen, cluster)?;
    println!(
        "feedstorm: topology {:?} serving on http://{addr}  (try: curl http://{addr}/status)",
        topology.name,
        addr = server.addr
    );
    match wait_for_end(&running)? {
        Ended::LostPeer(lost) => exit_lost_peer(lost),
        Ended::Asked(signal) => {
            tracing::info!(
                signal,
                "stopping: every process halts at one epoch and checkpoints there"
            );
        }
        Ended::ByPeer => tracing::info!("stopping: another process of the cluster asked"),
        Ended::Failed => exit_failed(),
    }
    running.ask_to_stop();
    // The workers drain; the API keeps answering meanwhile.
    while !running.workers_returned() {
        if let Some(lost) = feedstorm::cluster::lost_peer() {
            exit_lost_peer(lost);
        }
        if running.status.failed() {
            exit_failed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(server);
    let status = running.status.clone();
    running.stop()?;
    if !status.healthy() {
        bail!("a worker failed; see the log above");
    }
    Ok(())
}

/// Binds the HTTP address first (the other processes are told where to
/// forward reads), then starts the topology and serves its API.
fn start(
    process: &ProcessConfig,
    topology: &TopologyConfig,
    listen: Option<SocketAddr>,
    cluster: Cluster,
) -> anyhow::Result<(Running, Server)> {
    let token = process.http.token()?;
    let listen = listen.unwrap_or(process.listen);
    if token.is_none() && !listen.ip().is_loopback() {
        tracing::warn!(
            %listen,
            "the HTTP API listens beyond loopback without a token: anyone who reaches it can \
             read every feed (set [http] token_env in the config)"
        );
    }
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    let http = advertised(listener.local_addr()?, &cluster);
    let options = RunOptions {
        cluster,
        http: Some(http),
    };
    let running = Running::start(topology, &options)?;
    let api = Api::new(&running, topology, process.max_page_limit).with_token(token);
    let server = Server::serve(listener, api)?;
    Ok((running, server))
}

/// Waits for a signal, a stop by another process or a lost peer; logs
/// when the topology has caught up.
fn wait_for_end(running: &Running) -> anyhow::Result<Ended> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = running.status.clone();
    let mut terminate =
        runtime.block_on(async { tokio::signal::unix::signal(SignalKind::terminate()) })?;
    Ok(runtime.block_on(async {
        let mut announced = false;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ended::Asked("SIGINT"),
                _ = terminate.recv() => return Ended::Asked("SIGTERM"),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if let Some(lost) = feedstorm::cluster::lost_peer() {
                        return Ended::LostPeer(lost);
                    }
                    if running.status.failed() {
                        return Ended::Failed;
                    }
                    if running.workers_returned() {
                        return Ended::ByPeer;
                    }
                    if status.caught_up() && !announced {
                        announced = true;
                        tracing::info!(events_in = status.events_in(), events_bad = status.events_bad(), "caught up");
                    }
                }
            }
        }
    }))
}

/// Timely's cluster cannot go on without a lost peer: exit now (status 2),
/// committing nothing past the checkpoint durable everywhere.
fn exit_lost_peer(lost: &str) -> ! {
    eprintln!("feedstorm: {lost}");
    std::process::exit(2);
}

/// A worker failed (its error is logged): the others cannot finish an
/// epoch without it, so exit now (status 1), as for a lost peer. Nothing
/// was acked past the last durable checkpoint and sink write, so a restart
/// resumes from there.
fn exit_failed() -> ! {
    // Workers fail on the channels of a lost peer: say that, the cause.
    if let Some(lost) = feedstorm::cluster::lost_peer() {
        exit_lost_peer(lost);
    }
    eprintln!("feedstorm: a worker failed (see the log above); exiting");
    std::process::exit(1);
}

/// Why `run` ends.
enum Ended {
    /// A signal asked this process to stop the cluster.
    Asked(&'static str),
    /// Another process stopped the cluster.
    ByPeer,
    /// A worker of this process failed.
    Failed,
    /// A peer process was lost.
    LostPeer(&'static str),
}

/// The HTTP address other processes reach this one at: the bound address,
/// or for an unspecified one (`0.0.0.0`) this process's host in the hosts file.
fn advertised(bound: SocketAddr, cluster: &Cluster) -> String {
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    let host = cluster
        .addresses
        .get(cluster.process)
        .and_then(|address| address.rsplit_once(':'))
        .map_or("127.0.0.1", |(host, _)| host);
    format!("{host}:{}", bound.port())
}
