//! The HTTP API of SPEC section 6 (flat feeds, digests, notifications,
//! rebuild-feed, status, health, metrics).
//! JSON in and out; errors are `{"error": "..."}` with a 4xx/5xx status.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use crate::config::{Materialize, TopologyConfig};
use crate::digest::MarkRequest;
use crate::drpc::{Drpc, DrpcError};
use crate::error::{Error, Result};
use crate::event::TypedId;
use crate::feed::{EntryOut, FeedKey};
use crate::push::Pushes;
use crate::runtime::Running;
use crate::status::Status;
use crate::store::{page_of, FeedPage, PageStart, Store, StoreStats};

mod forward;
mod guard;
mod serve;
mod stream;
mod topology;

pub use forward::ClusterView;

/// What the handlers share.
pub struct Api {
    /// The store feeds are read from.
    pub store: Arc<dyn Store>,
    /// Counters and progress.
    pub status: Arc<Status>,
    /// Largest `limit` accepted.
    pub max_limit: usize,
    /// The rebuild-feed desk.
    pub drpc: Arc<Drpc>,
    /// Whether feeds of users who are not live are rebuilt on read.
    pub materialize: Materialize,
    /// How long a rebuild may take.
    pub drpc_timeout: Duration,
    /// Names of the topology's digests; the first is served without `name`.
    pub digests: Vec<String>,
    /// Whether the topology keeps notification feeds.
    pub notifications: bool,
    /// This process's cluster, and where reads of other processes' users go.
    pub cluster: ClusterView,
    /// Whether reads of users owned by other processes are forwarded there.
    pub forward: bool,
    /// The bearer token every route but `/health` and `/ready` needs.
    pub token: Option<String>,
    /// Head changes for the open streams.
    pub pushes: Arc<Pushes>,
    /// The topology's spouts by name (`generator`, `file:PATH`, `kafka:TOPICS`).
    pub spouts: Vec<String>,
    /// The store's figures, counted in the background.
    stats: Arc<StatsCache>,
}

impl Api {
    /// The API of a running topology.
    pub fn new(running: &Running, topology: &TopologyConfig, max_limit: usize) -> Api {
        Api {
            store: running.store.clone(),
            status: running.status.clone(),
            max_limit,
            drpc: running.drpc.clone(),
            materialize: topology.feed.materialize,
            drpc_timeout: topology.drpc.timeout,
            digests: topology.digests.iter().map(|d| d.name.clone()).collect(),
            notifications: topology.notifications.enabled,
            // Forward when this process cannot answer for every user: its
            // store is its own, or live heads are known only where owned.
            forward: running.cluster.is_distributed()
                && (!running.store.persistent()
                    || topology.feed.materialize == Materialize::Active),
            cluster: ClusterView {
                cluster: running.cluster.clone(),
                agreement: running.agreement.clone(),
            },
            token: None,
            spouts: topology.spouts.iter().map(|s| s.name()).collect(),
            pushes: running.pushes.clone(),
            stats: StatsCache::spawn(running.store.clone()),
        }
    }

    /// The store's figures as last counted.
    fn store_stats(&self) -> StoreStats {
        *self.stats.0.lock().expect("stats lock")
    }

    /// Requires `Authorization: Bearer TOKEN` on every route but `/health`
    /// and `/ready`.
    pub fn with_token(mut self, token: Option<String>) -> Api {
        self.token = token;
        self
    }

    async fn rebuild(&self, user: &TypedId) -> std::result::Result<Vec<FeedKey>, ApiError> {
        let (id, answer) = self.drpc.submit(user.clone());
        self.drpc
            .wait(id, answer, self.drpc_timeout)
            .await
            .map_err(|e| match e {
                DrpcError::Timeout(_) => ApiError(StatusCode::GATEWAY_TIMEOUT, e.to_string()),
                DrpcError::Stopped => ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            })
    }

    /// Whether `user` has no live head to read (`active` mode, not read
    /// within the window): a read rebuilds it. A live user's read keeps it live.
    fn not_live(&self, user: &TypedId) -> bool {
        self.materialize == Materialize::Active && !self.drpc.touch_if_active(user)
    }

    /// A page of `keys` (newest first), with their activities from the store.
    fn page_of_keys(
        &self,
        keys: &[FeedKey],
        start: &PageStart,
        limit: usize,
    ) -> std::result::Result<FeedPage, ApiError> {
        let (page, more) = page_of(keys, start, limit);
        let mut entries = Vec::with_capacity(page.len());
        for key in &page {
            entries.extend(blocking(|| self.store.activity(&key.id)).map_err(internal)?);
        }
        let next_cursor = more.then(|| page.last().map(FeedKey::cursor)).flatten();
        Ok(FeedPage {
            entries,
            next_cursor,
        })
    }
}

/// Runs a store call on this runtime thread, telling the runtime to move
/// its other tasks elsewhere meanwhile (a Redis round trip must not stall
/// the probes).
fn blocking<T>(call: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(call)
}

/// Store figures for `/status` and `/metrics`, counted off the request path
/// by a thread of its own while the API lives (on Redis counting is a SCAN;
/// in the embedded store a walk over every feed).
pub struct StatsCache(std::sync::Mutex<StoreStats>);

impl StatsCache {
    fn spawn(store: Arc<dyn Store>) -> Arc<StatsCache> {
        let every = if store.persistent() {
            Duration::from_secs(15)
        } else {
            Duration::from_secs(1)
        };
        let cache = Arc::new(StatsCache(std::sync::Mutex::new(StoreStats::default())));
        let weak = Arc::downgrade(&cache);
        let counting = std::thread::Builder::new()
            .name("store-stats".into())
            .spawn(move || loop {
                let stats = store.stats();
                let Some(cache) = weak.upgrade() else { return };
                *cache.0.lock().expect("stats lock") = stats;
                drop(cache);
                std::thread::sleep(every);
            });
        if let Err(error) = counting {
            tracing::warn!(%error, "store figures will read as zero");
        }
        cache
    }
}

/// The flat-feed answer: `{"user", "entries", "next_cursor"}`.
fn page_response(user: &TypedId, page: &FeedPage) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        page_body(user, page),
    )
        .into_response()
}

/// The flat-feed answer's JSON, serialized straight from the entries, not
/// through a `Value`, so that `extra` goes out verbatim (a `Value` would
/// merge duplicate keys).
fn page_body(user: &TypedId, page: &FeedPage) -> String {
    #[derive(Serialize)]
    struct PageOut<'a> {
        user: &'a TypedId,
        entries: Vec<EntryOut<'a>>,
        next_cursor: &'a Option<String>,
    }
    let entries = page
        .entries
        .iter()
        .map(|a| EntryOut::from(a.as_ref()))
        .collect();
    serde_json::to_string(&PageOut {
        user,
        entries,
        next_cursor: &page.next_cursor,
    })
    .expect("feed pages serialize")
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

fn not_found(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, message.into())
}

/// The router, for embedding or testing.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/feeds/{user}", get(feed))
        .route("/feeds/{user}/stream", get(stream::stream))
        .route("/feeds/{user}/digest", get(digest))
        .route("/feeds/{user}/notifications", get(notifications))
        .route("/feeds/{user}/notifications/mark", post(mark_notifications))
        .route("/drpc/rebuild-feed", post(rebuild_feed))
        .route("/status", get(status))
        .route("/api/v1/topology", get(topology::topology))
        .route("/ui", get(topology::page))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(guard::no_such_route)
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            forward::forward_to_owner,
        ))
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            guard::admit,
        ))
        .layer(axum::middleware::from_fn(guard::json_errors))
        .layer(axum::extract::DefaultBodyLimit::max(guard::MAX_BODY_BYTES))
        .with_state(api)
}

/// Parses a `USER` path segment (already percent-decoded).
pub fn parse_user(
    path: std::result::Result<Path<String>, PathRejection>,
) -> std::result::Result<TypedId, ApiError> {
    let Path(user) = path.map_err(|e| bad_request(e.body_text()))?;
    TypedId::parse(&user).ok_or_else(|| bad_request(format!("{user:?} is not a typed id kind:id")))
}

/// Parses `limit`, `offset` and `cursor`.
pub fn parse_page(
    query: std::result::Result<Query<HashMap<String, String>>, QueryRejection>,
    max_limit: usize,
) -> std::result::Result<(PageStart, usize), ApiError> {
    let Query(query) = query.map_err(|e| bad_request(e.body_text()))?;
    let limit = match query.get("limit") {
        None => 20,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=max_limit).contains(&n) => n,
            _ => {
                return Err(bad_request(format!(
                    "limit must be an integer from 1 to {max_limit}"
                )))
            }
        },
    };
    let start = match (query.get("offset"), query.get("cursor")) {
        (Some(_), Some(_)) => return Err(bad_request("give offset or cursor, not both")),
        (Some(offset), None) => PageStart::Offset(
            offset
                .parse()
                .map_err(|_| bad_request("offset must be a non-negative integer"))?,
        ),
        (None, Some(cursor)) => PageStart::After(
            FeedKey::from_cursor(cursor).ok_or_else(|| bad_request("malformed cursor"))?,
        ),
        (None, None) => PageStart::Offset(0),
    };
    Ok((start, limit))
}

fn internal(error: Error) -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
}

async fn feed(
    State(api): State<Arc<Api>>,
    path: std::result::Result<Path<String>, PathRejection>,
    query: std::result::Result<Query<HashMap<String, String>>, QueryRejection>,
) -> std::result::Result<Response, ApiError> {
    let user = parse_user(path)?;
    let (start, limit) = parse_page(query, api.max_limit)?;
    if api.not_live(&user) {
        // Not live: rebuild it in the dataflow (which makes it live again).
        let head = api.rebuild(&user).await?;
        return Ok(page_response(
            &user,
            &api.page_of_keys(&head, &start, limit)?,
        ));
    }
    let page = blocking(|| api.store.feed_page(&user, &start, limit)).map_err(internal)?;
    Ok(page_response(&user, &page))
}

async fn digest(
    State(api): State<Arc<Api>>,
    path: std::result::Result<Path<String>, PathRejection>,
    query: std::result::Result<Query<HashMap<String, String>>, QueryRejection>,
) -> std::result::Result<Response, ApiError> {
    let user = parse_user(path)?;
    let name = match &query {
        Ok(Query(q)) => q.get("name").cloned(),
        Err(_) => None,
    };
    let (start, limit) = parse_page(query, api.max_limit)?;
    let name = match name {
        Some(name) if api.digests.contains(&name) => name,
        Some(name) => return Err(not_found(format!("no digest named {name:?}"))),
        None => api
            .digests
            .first()
            .cloned()
            .ok_or_else(|| not_found("this topology keeps no digest"))?,
    };
    let page = blocking(|| api.store.digest_page(&user, &name, &start, limit)).map_err(internal)?;
    Ok(Json(json!({
        "user": user,
        "digest": name,
        "groups": page.groups,
        "next_cursor": page.next_cursor,
    }))
    .into_response())
}

fn notifications_enabled(api: &Api) -> std::result::Result<(), ApiError> {
    if api.notifications {
        Ok(())
    } else {
        Err(not_found("this topology keeps no notification feeds"))
    }
}

async fn notifications(
    State(api): State<Arc<Api>>,
    path: std::result::Result<Path<String>, PathRejection>,
    query: std::result::Result<Query<HashMap<String, String>>, QueryRejection>,
) -> std::result::Result<Response, ApiError> {
    let user = parse_user(path)?;
    let (start, limit) = parse_page(query, api.max_limit)?;
    notifications_enabled(&api)?;
    let page = blocking(|| api.store.notifications_page(&user, &start, limit)).map_err(internal)?;
    Ok(Json(json!({
        "user": user,
        "groups": page.groups,
        "unseen": page.counts.unseen,
        "unread": page.counts.unread,
        "next_cursor": page.next_cursor,
    }))
    .into_response())
}

async fn mark_notifications(
    State(api): State<Arc<Api>>,
    path: std::result::Result<Path<String>, PathRejection>,
    body: std::result::Result<Json<MarkRequest>, JsonRejection>,
) -> std::result::Result<Response, ApiError> {
    let user = parse_user(path)?;
    let Json(request) = body.map_err(|e| ApiError(e.status(), e.body_text()))?;
    let keys = [&request.seen, &request.read]
        .into_iter()
        .flatten()
        .map(|set| match set {
            crate::digest::MarkSet::Keys(keys) => keys.len(),
            crate::digest::MarkSet::All(_) => 0,
        })
        .sum::<usize>();
    if keys > guard::MAX_MARK_KEYS {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{keys} group keys; at most {} a request",
                guard::MAX_MARK_KEYS
            ),
        ));
    }
    if request.seen.is_none() && request.read.is_none() {
        return Err(bad_request(
            "give \"seen\" and/or \"read\": true or a list of group keys",
        ));
    }
    notifications_enabled(&api)?;
    let counts = blocking(|| api.store.mark_notifications(&user, &request)).map_err(internal)?;
    Ok(
        Json(json!({"user": user, "unseen": counts.unseen, "unread": counts.unread}))
            .into_response(),
    )
}

/// `POST /drpc/rebuild-feed` body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RebuildBody {
    user: String,
    limit: Option<usize>,
}

async fn rebuild_feed(
    State(api): State<Arc<Api>>,
    body: std::result::Result<Json<RebuildBody>, JsonRejection>,
) -> std::result::Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError(e.status(), e.body_text()))?;
    let user = TypedId::parse(&body.user)
        .ok_or_else(|| bad_request(format!("{:?} is not a typed id kind:id", body.user)))?;
    let head = api.rebuild(&user).await?;
    let limit = body.limit.unwrap_or(head.len()).max(1);
    let page = api.page_of_keys(&head, &PageStart::Offset(0), limit)?;
    Ok(page_response(&user, &page))
}

async fn status(State(api): State<Arc<Api>>) -> Response {
    let mut status = api.status.to_json(api.store_stats());
    status["cluster"] = cluster_json(&api);
    status["push"] = api.pushes.to_json();
    Json(status).into_response()
}

/// The processes, their workers, and what this process's workers read (by
/// global worker index).
pub(crate) fn cluster_json(api: &Api) -> serde_json::Value {
    let mut cluster = api.cluster.to_json();
    let first = api.cluster.cluster.first_worker();
    let sources: serde_json::Map<String, serde_json::Value> = (0..api.cluster.cluster.workers)
        .map(|w| {
            (
                (first + w).to_string(),
                json!(api.status.worker(w).sources()),
            )
        })
        .collect();
    cluster["sources"] = serde_json::Value::Object(sources);
    cluster
}

/// Liveness, from memory: 200 while the process runs, also while the
/// sink is down (restarting would not bring it back); 503 once a worker
/// failed (only a restart helps).
async fn health(State(api): State<Arc<Api>>) -> Response {
    if api.status.failed() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "failed"})),
        )
            .into_response()
    } else {
        Json(json!({"status": "ok"})).into_response()
    }
}

/// Readiness, from memory: 503 while the sink is down, before the topology
/// has caught up once, or after a worker failed.
async fn ready(State(api): State<Arc<Api>>) -> Response {
    let status = &api.status;
    let mut waiting = Vec::new();
    if status.failed() {
        waiting.push("a worker failed");
    }
    if !status.sink_ok() {
        waiting.push("the sink is down");
    }
    if !status.caught_up_once() {
        waiting.push("not caught up yet");
    }
    if waiting.is_empty() {
        Json(json!({"ready": true})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "waiting_for": waiting})),
        )
            .into_response()
    }
}

async fn metrics(State(api): State<Arc<Api>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        api.status.to_prometheus(api.store_stats()),
    )
        .into_response()
}

/// A running HTTP server on its own thread.
pub struct Server {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` and serves `api` until dropped.
    pub fn start(addr: SocketAddr, api: Api) -> Result<Server> {
        Server::serve(std::net::TcpListener::bind(addr)?, api)
    }

    /// Serves `api` on a bound `listener` until dropped.
    pub fn serve(listener: std::net::TcpListener, api: Api) -> Result<Server> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let app = router(Arc::new(api));
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(error) => return tracing::error!(%error, "http listener"),
                    };
                    serve::accept_loop(listener, app, stopped).await;
                })
            })?;
        Ok(Server {
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
