//! `bench --plot FILE.svg`: one run drawn in three panels, feed deliveries
//! per second and resident memory over the run, and the distribution of
//! rebuild latencies per probe user.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::bench::BenchReport;
use crate::error::{Error, Result};

const WIDTH: u32 = 960;
const PANEL: u32 = 300;
const PALETTE: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

fn fail(error: &dyn std::fmt::Display) -> Error {
    Error::Io(std::io::Error::other(format!("plot: {error}")))
}

/// One panel's axes: x from 0 to `x.0`, y from 0 to `y.0`, each with its label.
fn panel<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    x: (f64, &str),
    y: (f64, &str),
) -> Result<ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x.0, 0.0..y.0)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc(x.1)
        .y_desc(y.1)
        .draw()
        .map_err(|e| fail(&e))?;
    Ok(chart)
}

/// Draws `report` to the SVG file `path`.
///
/// ```
/// # use feedstorm::bench::{BenchReport, Sample};
/// # let dir = tempfile::tempdir().unwrap();
/// # let report: BenchReport = serde_json::from_value(serde_json::json!({
/// #   "materialize": "all", "events": 10, "deliveries": 20, "digest_updates": 0,
/// #   "head_entries": 5, "live_users": 2, "topology_secs": 1.0, "reference_secs": 2.0,
/// #   "peak_rss_growth": 1048576, "held_rss_growth": 1048576, "rebuild_latency": [],
/// #   "rebuild_samples": [[10, [0.5, 0.7, 1.2]]],
/// #   "timeline": [{"secs": 0.0, "deliveries": 0, "rss_growth": 0},
/// #                {"secs": 0.1, "deliveries": 20, "rss_growth": 1048576}],
/// #   "redis_memory_growth": null, "redis_writes_per_sec": null,
/// #   "redis_benchmark_zadd_per_sec": null, "verified": true, "workers": 2,
/// #   "top_followed_share": 0.5, "late_share": 0.0 })).unwrap();
/// let path = dir.path().join("bench.svg");
/// feedstorm::bench::plot::draw(&report, &path).unwrap();
/// assert!(std::fs::read_to_string(&path).unwrap().contains("rebuild latency"));
/// ```
pub fn draw(report: &BenchReport, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (WIDTH, 3 * PANEL)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let panels = root.split_evenly((3, 1));
    let end = report.timeline.last().map_or(1.0, |s| s.secs.max(0.1));
    deliveries(&panels[0], report, end)?;
    memory(&panels[1], report, end)?;
    rebuild_latency(&panels[2], report)?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

/// Deliveries per second over the run.
fn deliveries(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    report: &BenchReport,
    end: f64,
) -> Result<()> {
    // Deliveries per second over the last half second: deliveries are
    // counted per epoch, so single samples are bursts and pauses.
    let window = (0.5 / crate::bench::SAMPLE_EVERY.as_secs_f64())
        .round()
        .max(1.0) as usize;
    let rates: Vec<(f64, f64)> = report
        .timeline
        .windows(window + 1)
        .map(|w| {
            let (first, last) = (w[0], w[window]);
            let secs = (last.secs - first.secs).max(1e-6);
            let done = last.deliveries.saturating_sub(first.deliveries) as f64;
            (last.secs, done / secs / 1e6)
        })
        .collect();
    let top = rates.iter().map(|r| r.1).fold(0.1, f64::max) * 1.1;
    let caption = format!(
        "feed deliveries/s, {} workers, materialize {} ({:.2}M/s over the run)",
        report.workers,
        report.materialize,
        report.deliveries as f64 / report.topology_secs.max(1e-9) / 1e6
    );
    let mut chart = panel(area, &caption, (end, "seconds"), (top, "millions/s"))?;
    chart
        .draw_series(LineSeries::new(rates, PALETTE[0].stroke_width(2)))
        .map_err(|e| fail(&e))?;
    Ok(())
}

/// Resident memory growth over the run.
fn memory(area: &DrawingArea<SVGBackend<'_>, Shift>, report: &BenchReport, end: f64) -> Result<()> {
    // Resident memory growth.
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    let memory: Vec<(f64, f64)> = report
        .timeline
        .iter()
        .map(|s| (s.secs, mib(s.rss_growth)))
        .collect();
    let top = memory.iter().map(|m| m.1).fold(1.0, f64::max) * 1.1;
    let caption = format!(
        "resident memory growth (held at the end: {:.0} MiB, peak {:.0} MiB)",
        mib(report.held_rss_growth),
        mib(report.peak_rss_growth)
    );
    let mut chart = panel(area, &caption, (end, "seconds"), (top, "MiB"))?;
    chart
        .draw_series(LineSeries::new(memory, PALETTE[1].stroke_width(2)))
        .map_err(|e| fail(&e))?;
    Ok(())
}

/// The rebuild latency distribution per probe user.
fn rebuild_latency(area: &DrawingArea<SVGBackend<'_>, Shift>, report: &BenchReport) -> Result<()> {
    // Rebuild latency: the share of rebuilds at or below each latency.
    let slowest = report
        .rebuild_samples
        .iter()
        .flat_map(|(_, millis)| millis.iter().copied())
        .fold(0.1, f64::max)
        * 1.1;
    let caption = "rebuild latency distribution (after catch-up)";
    let mut chart = panel(
        area,
        caption,
        (slowest, "milliseconds"),
        (1.0, "share of rebuilds"),
    )?;
    for (index, (interests, millis)) in report.rebuild_samples.iter().enumerate() {
        let mut sorted = millis.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len().max(1) as f64;
        let points = sorted
            .iter()
            .enumerate()
            .map(|(i, ms)| (*ms, (i + 1) as f64 / n));
        let color = PALETTE[index % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| fail(&e))?
            .label(format!("{interests} interests"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| fail(&e))?;
    Ok(())
}
