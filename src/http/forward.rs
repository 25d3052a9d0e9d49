//! Forwarding a feed read to the process that owns the user.
//!
//! In a cluster, each process's embedded store holds the feeds of the users
//! its workers own (and every activity); in `active` mode, which heads are
//! live is known where the user is owned. So a `/feeds/USER...` request for a
//! user owned by another process is passed to that process's HTTP API as it
//! came (method, path, query, body, `Authorization`), and its answer is
//! returned as it is. With Redis in `all` mode every process reads Redis and
//! nothing is forwarded.

use std::sync::{Arc, OnceLock};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Api, ApiError};
use crate::cluster::hello::Agreement;
use crate::cluster::Cluster;
use crate::event::TypedId;

/// Marks a forwarded request, which is always served where it arrives.
const FORWARDED: &str = "x-feedstorm-forwarded";

/// The cluster as the API sees it: this process's place, and the other
/// processes' HTTP addresses (where reads of their users go).
pub struct ClusterView {
    /// This process's place.
    pub cluster: Cluster,
    /// The other processes' HTTP addresses, once they met.
    pub agreement: Arc<OnceLock<Agreement>>,
}

impl ClusterView {
    /// What `/status` shows: this process, and every process's workers and
    /// HTTP address.
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.cluster;
        let agreement = self.agreement.get();
        let processes: Vec<serde_json::Value> = (0..c.processes)
            .map(|p| {
                serde_json::json!({
                    "process": p,
                    "workers": (p * c.workers..(p + 1) * c.workers).collect::<Vec<_>>(),
                    "http": agreement.and_then(|a| a.http_of(p)),
                    "address": c.addresses.get(p),
                })
            })
            .collect();
        serde_json::json!({
            "process": c.process,
            "processes": processes,
            "workers_per_process": c.workers,
            "met": agreement.is_some(),
        })
    }

    /// The owner's HTTP address when `path` reads a user another process owns.
    fn target(&self, path: &str) -> Option<&str> {
        let rest = path.strip_prefix("/feeds/")?;
        let segment = rest.split('/').next()?;
        let name = percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .ok()?;
        let user = TypedId::parse(&name)?;
        let owner = self.cluster.owner_of(&user);
        if owner == self.cluster.process {
            return None;
        }
        self.agreement.get()?.http_of(owner)
    }
}

/// Middleware: serves locally, or forwards to the owner of the user.
pub async fn forward_to_owner(
    State(api): State<Arc<Api>>,
    request: Request,
    next: Next,
) -> Response {
    let forwarded = request.headers().contains_key(FORWARDED);
    let path = request.uri().path();
    // A stream is not proxied: its client goes to the owner, whose sink
    // writes (and pushes) that user's head.
    if path.ends_with("/stream") && !forwarded {
        if let Some(owner) = api.cluster.target(path) {
            let query = request
                .uri()
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            let location = format!("http://{owner}{path}{query}");
            return (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
            )
                .into_response();
        }
    }
    let target = if api.forward && !forwarded {
        api.cluster.target(path).map(str::to_owned)
    } else {
        None
    };
    let Some(target) = target else {
        return next.run(request).await;
    };
    match forward(&target, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn forward(target: &str, request: Request) -> Result<Response, ApiError> {
    let unreachable = |e: String| {
        ApiError(
            StatusCode::BAD_GATEWAY,
            format!("owner process {target}: {e}"),
        )
    };
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, super::guard::MAX_BODY_BYTES)
        .await
        .map_err(|e| ApiError(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()))?;
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let url = format!("http://{target}{path}");
    let method = parts.method.as_str().to_owned();
    let header_of = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let (authorization, content_type) = (
        header_of(header::AUTHORIZATION),
        header_of(header::CONTENT_TYPE),
    );
    let answer = tokio::task::spawn_blocking(move || {
        let mut call = ureq::request(&method, &url).set(FORWARDED, "1");
        if let Some(value) = &authorization {
            call = call.set("authorization", value);
        }
        if let Some(value) = &content_type {
            call = call.set("content-type", value);
        }
        let response = match call.send_bytes(&body) {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(error) => return Err(error.to_string()),
        };
        let status = response.status();
        let kind = response.content_type().to_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes)
            .map_err(|e| e.to_string())?;
        Ok((status, kind, bytes))
    })
    .await
    .map_err(|e| unreachable(e.to_string()))?
    .map_err(unreachable)?;
    let (status, kind, bytes) = answer;
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    if let Ok(value) = HeaderValue::from_str(&kind) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    Ok(response)
}
