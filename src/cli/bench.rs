//! `feedstorm bench` (with the `bench` feature): its arguments and how its
//! reports are printed; the measuring is the library's `bench` module.

use anyhow::bail;
use feedstorm::config::{FeedConfig, Materialize};

use super::Workload;

/// `feedstorm bench`: the workload and what to measure.
#[derive(clap::Args)]
pub(super) struct BenchArgs {
    #[command(flatten)]
    workload: Workload,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Run one mode only, in this process.
    #[arg(long, value_enum)]
    materialize: Option<Mode>,
    /// In active mode, the share of users who read their feed at the start.
    #[arg(long, default_value_t = 0.05)]
    active_fraction: f64,
    /// Rebuild requests timed per probe user (10, 100, 1000 interests).
    #[arg(long, default_value_t = 30)]
    latency_samples: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Write feeds to this Redis database (it is emptied with FLUSHDB:
    /// give a spare one, e.g. redis://127.0.0.1:6390/15) and compare with
    /// redis-benchmark on the same server. With --restart: both runs
    /// write to it, and the restart finds the heads already there.
    #[arg(long)]
    redis: Option<String>,
    /// Skip checking feeds against the reference model.
    #[arg(long)]
    no_verify: bool,
    /// Keep the default digest and notification feeds too (each user's
    /// digest holds about `digest_size + slack` whole groups).
    #[arg(long)]
    digests: bool,
    /// Draw deliveries/s and memory over the run, and the rebuild
    /// latency distribution, to this SVG file (without --materialize:
    /// of the `all` run).
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<std::path::PathBuf>,
    /// With --digests: run the workload this many times with digests and
    /// as many without (flat feeds only), alternating, each in a child
    /// process, and print the digest run's time against the flat run's
    /// (the ratio of the medians, and of the fastest of each): on a noisy
    /// machine one pair alone says little.
    #[arg(long, value_name = "N", requires = "digests")]
    against_flat: Option<usize>,
    /// Instead: time a restart from a checkpoint after the workload,
    /// with this many new events, against a full replay of the same
    /// events (both from process start to caught up).
    #[arg(long, value_name = "NEW_EVENTS")]
    restart: Option<u64>,
}

/// Materialization mode for `bench`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Mode {
    /// Every user's head live.
    All,
    /// Only heads read recently.
    Active,
}

/// `feedstorm bench`: one mode in this process, both compared in child
/// processes, or a restart against a full replay.
pub(super) fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let feed = FeedConfig {
        materialize: match args.materialize {
            Some(Mode::Active) => Materialize::Active,
            _ => Materialize::All,
        },
        retention: args.workload.retention,
        ..FeedConfig::default()
    };
    let options = feedstorm::bench::BenchOptions {
        workload: args.workload.config(),
        workers: args.workers,
        feed,
        digests: args.digests,
        verify: !args.no_verify,
        active_fraction: args.active_fraction,
        latency_samples: args.latency_samples,
        redis: args.redis.clone(),
    };
    if let Some(new) = args.restart {
        let options = feedstorm::bench::BenchOptions {
            verify: false,
            latency_samples: 0,
            ..options
        };
        let report = feedstorm::bench::restart::run(&options, new)?;
        return print_report(&report, args.json);
    }
    if let Some(pairs) = args.against_flat {
        return against_flat(&args, pairs);
    }
    if args.materialize.is_none() {
        return compare_modes(&args);
    }
    let report = feedstorm::bench::run(&options)?;
    if let Some(path) = &args.plot {
        feedstorm::bench::plot::draw(&report, path)?;
    }
    print_report(&report, args.json)?;
    if report.verified == Some(false) {
        bail!("feeds differ from the reference model");
    }
    Ok(())
}

/// Prints a report as text, or as one line of JSON.
fn print_report(
    report: &(impl std::fmt::Display + serde::Serialize),
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

/// Runs `bench` once per mode, each in a child process, and prints the ratio.
fn compare_modes(args: &BenchArgs) -> anyhow::Result<()> {
    // Three runs: every head live; a share of users live; no head live (the
    // state both modes share), so head memory = held(mode) - held(none).
    let runs = [
        ("all", args.active_fraction),
        ("active", args.active_fraction),
        ("active", 0.0),
    ];
    let mut reports = Vec::new();
    for (mode, fraction) in runs {
        let plot = args.plot.as_deref().filter(|_| mode == "all");
        let report = child_run(args, mode, fraction, args.digests, plot)?;
        println!("{report}");
        reports.push(report);
    }
    print_comparison(&reports[0], &reports[1], &reports[2], args.active_fraction);
    Ok(())
}

/// Runs `bench --json` in a child process (so that its memory is its own)
/// with `args`' workload in `mode`, and reads its report.
fn child_run(
    args: &BenchArgs,
    mode: &str,
    active_fraction: f64,
    digests: bool,
    plot: Option<&std::path::Path>,
) -> anyhow::Result<feedstorm::bench::BenchReport> {
    let mut child = std::process::Command::new(std::env::current_exe()?);
    child.args(["bench", "--json", "--materialize", mode]);
    child.args(["--workers", &args.workers.to_string()]);
    child.args(["--active-fraction", &active_fraction.to_string()]);
    child.args(["--latency-samples", &args.latency_samples.to_string()]);
    child.args(args.workload.args());
    if args.no_verify {
        child.arg("--no-verify");
    }
    if digests {
        child.arg("--digests");
    }
    if let Some(url) = &args.redis {
        child.args(["--redis", url]);
    }
    if let Some(path) = plot {
        child.arg("--plot").arg(path);
    }
    let output = child.stderr(std::process::Stdio::inherit()).output()?;
    if !output.status.success() {
        bail!("bench --materialize {mode} --active-fraction {active_fraction} failed");
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// `--digests --against-flat N`: N flat runs and N digest runs, alternating.
fn against_flat(args: &BenchArgs, pairs: usize) -> anyhow::Result<()> {
    let mode = match args.materialize {
        Some(Mode::Active) => "active",
        _ => "all",
    };
    let (mut flat, mut digests) = (Vec::new(), Vec::new());
    for pair in 1..=pairs.max(1) {
        let f = child_run(args, mode, args.active_fraction, false, None)?;
        let d = child_run(args, mode, args.active_fraction, true, None)?;
        if d.verified == Some(false) || f.verified == Some(false) {
            bail!("feeds differ from the reference model");
        }
        println!(
            "pair {pair}: flat {:.2} s, digests {:.2} s = {:.2}x",
            f.topology_secs,
            d.topology_secs,
            d.topology_secs / f.topology_secs.max(1e-9)
        );
        flat.push(f.topology_secs);
        digests.push(d.topology_secs);
    }
    flat.sort_by(f64::total_cmp);
    digests.sort_by(f64::total_cmp);
    let median = |times: &[f64]| times[times.len() / 2];
    println!(
        "digests / flat: {:.2}x of the medians ({:.2} / {:.2} s), {:.2}x of the fastest ({:.2} / {:.2} s)",
        median(&digests) / median(&flat),
        median(&digests),
        median(&flat),
        digests[0] / flat[0],
        digests[0],
        flat[0]
    );
    Ok(())
}

/// The memory of `all` against `active`, each less the state both share (`none`).
fn print_comparison(
    all: &feedstorm::bench::BenchReport,
    active: &feedstorm::bench::BenchReport,
    none: &feedstorm::bench::BenchReport,
    active_fraction: f64,
) {
    let heads =
        |r: &feedstorm::bench::BenchReport| r.held_rss_growth.saturating_sub(none.held_rss_growth);
    println!(
        "held RSS growth, all / active / none: {} / {} / {} MiB",
        all.held_rss_growth >> 20,
        active.held_rss_growth >> 20,
        none.held_rss_growth >> 20
    );
    println!(
        "feed-head memory (held - none), all / active ({:.0}% of users read): {} / {} MiB = {:.1}x",
        active_fraction * 100.0,
        heads(all) >> 20,
        heads(active) >> 20,
        heads(all) as f64 / heads(active).max(1) as f64
    );
    println!(
        "whole-process held RSS, all / active: {:.1}x; peak RSS: {:.1}x",
        all.held_rss_growth as f64 / active.held_rss_growth.max(1) as f64,
        all.peak_rss_growth as f64 / active.peak_rss_growth.max(1) as f64
    );
    if let (Some(a), Some(b), Some(n)) = (
        all.redis_memory_growth,
        active.redis_memory_growth,
        none.redis_memory_growth,
    ) {
        let (a, b) = (a.saturating_sub(n), b.saturating_sub(n));
        println!(
            "feed-head memory in Redis (used_memory - none), all / active: {} / {} KiB = {:.1}x",
            a >> 10,
            b >> 10,
            a as f64 / b.max(1) as f64
        );
    }
    println!(
        "feed-head entries, all / active: {} / {} = {:.1}x",
        all.head_entries,
        active.head_entries,
        all.head_entries as f64 / active.head_entries.max(1) as f64
    );
}
