//! Storm UI's two views of a running topology: `GET /api/v1/topology`, the
//! figures as JSON, and `GET /ui`, a page (embedded in the binary, no
//! fetches beyond this API) that draws them and polls for new ones.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{cluster_json, Api};
use crate::observe::SPOUTS;
use crate::topology::{describe, OPERATORS};

/// The topology page: one HTML file with its styles and script inline.
const PAGE: &str = include_str!("ui.html");

/// `GET /ui`.
pub(super) async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

/// `GET /api/v1/topology` (Storm UI's REST shape): the spouts, bolts and
/// sink with the edges between them and each one's figures per window
/// (see [`crate::observe::Operators::to_json`]), the parts the spouts
/// read with their positions and lag, epochs, counters, the last
/// checkpoint and the cluster. Figures are this process's workers'.
pub(super) async fn topology(State(api): State<Arc<Api>>) -> Response {
    Json(topology_json(&api)).into_response()
}

fn topology_json(api: &Api) -> Value {
    let status = api.status.to_json(api.store_stats());
    let figures = api.status.operators().to_json();
    let stats = |name: &str| figures["operators"].get(name).cloned().unwrap_or(json!({}));
    let component = |name: &str| json!({"id": name, "what": describe(name), "stats": stats(name)});
    let first = api.cluster.cluster.first_worker();
    let workers = api.cluster.cluster.workers;
    let parts: Vec<Value> = (0..workers)
        .flat_map(|w| {
            api.status.worker(w).backlog().into_iter().map(move |part| {
                json!({
                    "part": part.part,
                    "worker": first + w,
                    "position": part.position,
                    "high_watermark": part.high_watermark,
                    "lag": part.lag(),
                })
            })
        })
        .collect();
    let bolts: Vec<Value> = OPERATORS
        .into_iter()
        .filter(|name| *name != "WriteTo" && figures["operators"].get(*name).is_some())
        .map(component)
        .collect();
    let progress = || (0..workers).map(|w| api.status.worker(w));
    let in_flight: u64 = progress().map(|w| w.epochs_in_flight()).sum();
    let written: u64 = progress().map(|w| w.epochs_written()).sum();
    // Every worker wrote up to here; with checkpoints, sources are acked
    // up to the newest durable checkpoint instead.
    let written_through = progress().map(|w| w.last_written()).min().unwrap_or(0);
    let acked_through = match api.status.last_checkpoint() {
        Some(checkpoint) => Some(checkpoint.epoch),
        None if status["checkpoint"]["enabled"] == true => None,
        None => Some(written_through),
    };
    let mut spout = component(SPOUTS);
    spout["sources"] = json!(api.spouts);
    spout["parts"] = json!(parts);
    json!({
        "id": status["topology"],
        "name": status["topology"],
        "status": if api.status.healthy() { "ACTIVE" } else { "FAILED" },
        "uptime_seconds": status["uptime_seconds"],
        "process": api.cluster.cluster.process,
        "workers": (first..first + workers).collect::<Vec<_>>(),
        "windows": ["1m", "10m", "all"],
        "spouts": [spout],
        "bolts": bolts,
        "sink": component("WriteTo"),
        "edges": figures["edges"],
        "epochs": {
            "in_flight": in_flight,
            "written": written,
            "written_through": written_through,
            "acked_through": acked_through,
        },
        "caught_up": status["caught_up"],
        "events_in": status["events_in"],
        "events_bad": status["events_bad"],
        "dead_letters": status["events_bad"],
        "feed_deliveries": status["feed_deliveries"],
        "head_changes": status["head_changes"],
        "digest_updates": status["digest_updates"],
        "lag_total": status["lag_total"],
        "bytes_in_flight": status["bytes_in_flight"],
        "checkpoint": status["checkpoint"],
        "cluster": cluster_json(api),
    })
}
