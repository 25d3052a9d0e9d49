//! The `feedstorm` command: a thin shell over the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use feedstorm::config::{
    FileSpoutConfig, GeneratorConfig, ProcessConfig, SpoutConfig, TopologyConfig,
};
use feedstorm::http::{Api, Server};
use feedstorm::runtime::{RunOptions, Running};

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
    /// Measure throughput and memory on a generated workload.
    Bench {
        #[command(flatten)]
        workload: Workload,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Skip checking every feed against the reference model.
        #[arg(long)]
        no_verify: bool,
    },
}

/// The generated workload's shape.
#[derive(clap::Args)]
struct Workload {
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Users.
    #[arg(long, default_value_t = 10_000)]
    users: u64,
    /// Listings.
    #[arg(long, default_value_t = 5_000)]
    listings: u64,
    /// Follow events building the initial graph.
    #[arg(long, default_value_t = 1_000_000)]
    follows: u64,
    /// Events after the graph (mostly activities).
    #[arg(long, default_value_t = 200_000)]
    events: u64,
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
            ..GeneratorConfig::default()
        }
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
        } => run(&process, &topology, input, listen, workers),
        Command::Feed {
            user,
            server,
            limit,
            cursor,
        } => {
            let user =
                percent_encoding::utf8_percent_encode(&user, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            let mut request = ureq::get(&format!("http://{server}/feeds/{user}"))
                .query("limit", &limit.to_string());
            if let Some(cursor) = &cursor {
                request = request.query("cursor", cursor);
            }
            let body: serde_json::Value = match request.call() {
                Ok(response) => response.into_json()?,
                Err(ureq::Error::Status(code, response)) => {
                    bail!("{code}: {}", response.into_string().unwrap_or_default())
                }
                Err(e) => return Err(e).context(format!("cannot reach {server}")),
            };
            println!("{}", serde_json::to_string_pretty(&body)?);
            Ok(())
        }
        Command::Rebuild { user, server } => {
            let body = match ureq::post(&format!("http://{server}/drpc/rebuild-feed"))
                .send_json(serde_json::json!({ "user": user }))
            {
                Ok(response) => response.into_json::<serde_json::Value>()?,
                Err(ureq::Error::Status(code, response)) => {
                    bail!("{code}: {}", response.into_string().unwrap_or_default())
                }
                Err(e) => return Err(e).context(format!("cannot reach {server}")),
            };
            println!("{}", serde_json::to_string_pretty(&body)?);
            Ok(())
        }
        Command::Generate { out, workload } => {
            use std::io::Write;
            let config = workload.config();
            let mut file = std::io::BufWriter::new(std::fs::File::create(&out)?);
            for event in feedstorm::spout::Generator::sequence(&config) {
                writeln!(file, "{}", feedstorm::event::encode(&event))?;
            }
            file.flush()?;
            Ok(())
        }
        Command::Bench {
            workload,
            workers,
            no_verify,
        } => {
            let report = feedstorm::bench::run(&feedstorm::bench::BenchOptions {
                workload: workload.config(),
                workers,
                feed: Default::default(),
                verify: !no_verify,
            })?;
            print!("{report}");
            if report.verified == Some(false) {
                bail!("feeds differ from the reference model");
            }
            Ok(())
        }
    }
}

fn run(
    process: &ProcessConfig,
    topology_path: &std::path::Path,
    input: Option<PathBuf>,
    listen: Option<SocketAddr>,
    workers: Option<usize>,
) -> anyhow::Result<()> {
    let mut topology = TopologyConfig::load(topology_path)?;
    if let Some(path) = input {
        topology.spouts = vec![SpoutConfig::File(FileSpoutConfig {
            path,
            follow: false,
        })];
    }
    let running = Running::start(
        &topology,
        &RunOptions {
            workers: workers.unwrap_or(process.workers),
        },
    )?;
    let server = Server::start(
        listen.unwrap_or(process.listen),
        Api::new(&running, &topology, process.max_page_limit),
    )?;
    println!(
        "feedstorm: topology {:?} serving on http://{addr}  (try: curl http://{addr}/status)",
        topology.name,
        addr = server.addr
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = running.status.clone();
    runtime.block_on(async move {
        let mut announced = false;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if status.caught_up() && !announced {
                        announced = true;
                        tracing::info!(events_in = status.events_in(), events_bad = status.events_bad(), "caught up");
                    }
                }
            }
        }
    });
    drop(server);
    running.stop()?;
    Ok(())
}
