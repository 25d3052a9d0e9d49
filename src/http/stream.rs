//! `GET /feeds/USER/stream?limit=N`: a user's feed pushed as it changes,
//! as Server-Sent Events.
//!
//! First a `snapshot` event (the first page, as `GET /feeds/USER?limit=N`),
//! then, as each epoch is written on every worker, an `add` or `remove`
//! event (`{"entry": {...}}`) for each entry that entered or left those
//! first `N`, in feed order within the epoch. The stream keeps the user's
//! whole head (the keys only), so an entry that moves up into the first `N`
//! when another leaves arrives as an `add`: replaying the events onto the
//! snapshot always gives the first `N` entries of the head. After a
//! recovery replaced the head whole, a new `snapshot` comes. A comment line
//! every 15 s keeps idle connections open. A client that falls behind by
//! more than [`crate::push::STREAM_QUEUE`] epochs gets a final `reread`
//! event and the stream ends: it should read the feed again. In a cluster,
//! a stream of a user another process owns is redirected there (307).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{blocking, internal, page_body, parse_page, parse_user, Api, ApiError};
use crate::event::{format_time, Activity, TypedId};
use crate::feed::{EntryOut, FeedKey};
use crate::push::{Push, Subscription};
use crate::store::PageStart;

/// How often an idle stream sends a comment line.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /feeds/USER/stream`.
pub(super) async fn stream(
    State(api): State<Arc<Api>>,
    path: std::result::Result<Path<String>, PathRejection>,
    query: std::result::Result<Query<HashMap<String, String>>, QueryRejection>,
) -> std::result::Result<Response, ApiError> {
    let user = parse_user(path)?;
    let (start, limit) = parse_page(query, api.max_limit)?;
    if !matches!(start, PageStart::Offset(0)) {
        return Err(super::bad_request(
            "a stream starts at the head: no cursor or offset",
        ));
    }
    // Subscribed before the head is read: a change written in between
    // comes again, and replays onto the snapshot to the same head.
    let subscription = api.pushes.subscribe(user.clone());
    let head = head_keys(&api, &user).await?;
    let mut feed = FeedStream {
        api,
        user,
        limit,
        head: head.into_iter().collect(),
        subscription,
        pending: VecDeque::new(),
        done: false,
    };
    let snapshot = feed.snapshot()?;
    feed.pending.push_back(snapshot);
    let events = futures_util::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok::<_, Infallible>(event), feed))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// The user's head, newest first: from the store, or in `active` mode for
/// a user who is not live, rebuilt in the dataflow (which makes it live).
async fn head_keys(api: &Api, user: &TypedId) -> std::result::Result<Vec<FeedKey>, ApiError> {
    if api.not_live(user) {
        return api.rebuild(user).await;
    }
    blocking(|| api.store.feed_keys(user)).map_err(internal)
}

struct FeedStream {
    api: Arc<Api>,
    user: TypedId,
    limit: usize,
    /// The user's head as last written (ascending: the feed is its reverse).
    head: BTreeSet<FeedKey>,
    subscription: Subscription,
    pending: VecDeque<Event>,
    done: bool,
}

impl FeedStream {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            if self.subscription.cut_off() {
                self.done = true;
                let reread = json!({"error": "this stream fell behind and was cut off: read the feed again"});
                return Some(Event::default().event("reread").data(reread.to_string()));
            }
            match self.subscription.receiver.recv().await {
                Some(Push::Changes { changes, written }) => self.apply(changes, written),
                Some(Push::Reset) => match self.reread().await {
                    Ok(snapshot) => self.pending.push_back(snapshot),
                    Err(_) => self.done = true,
                },
                // Cut off (said above on the next turn), or the topology stopped.
                None if self.subscription.cut_off() => {}
                None => self.done = true,
            }
        }
    }

    /// The first `limit` entries, newest first.
    fn top(&self) -> Vec<FeedKey> {
        self.head.iter().rev().take(self.limit).cloned().collect()
    }

    fn snapshot(&self) -> std::result::Result<Event, ApiError> {
        let keys: Vec<FeedKey> = self.head.iter().rev().cloned().collect();
        let page = self
            .api
            .page_of_keys(&keys, &PageStart::Offset(0), self.limit)?;
        Ok(Event::default()
            .event("snapshot")
            .data(page_body(&self.user, &page)))
    }

    async fn reread(&mut self) -> std::result::Result<Event, ApiError> {
        self.head = head_keys(&self.api, &self.user)
            .await?
            .into_iter()
            .collect();
        self.snapshot()
    }

    /// Applies one epoch's changes and queues the events of the entries
    /// that entered or left the first `limit`, in feed order.
    fn apply(&mut self, changes: Vec<(FeedKey, isize)>, written: Instant) {
        let before: BTreeSet<FeedKey> = self.top().into_iter().collect();
        for (key, diff) in changes {
            if diff > 0 {
                self.head.insert(key);
            } else {
                self.head.remove(&key);
            }
        }
        let after: BTreeSet<FeedKey> = self.top().into_iter().collect();
        let mut moved: Vec<(&FeedKey, &str)> = after
            .difference(&before)
            .map(|k| (k, "add"))
            .chain(before.difference(&after).map(|k| (k, "remove")))
            .collect();
        moved.sort_by(|a, b| b.0.cmp(a.0));
        // The added entries' activities in one store call.
        let store = &self.api.store;
        let activities: Vec<Option<Arc<Activity>>> = blocking(|| {
            moved
                .iter()
                .map(|(key, kind)| match *kind {
                    "add" => store.activity(&key.id).ok().flatten(),
                    _ => None,
                })
                .collect()
        });
        for ((key, kind), activity) in moved.into_iter().zip(activities) {
            let entry = entry(key, activity);
            self.pending.push_back(
                Event::default()
                    .event(kind)
                    .data(format!("{{\"entry\":{entry}}}")),
            );
            self.api.pushes.sent(written);
        }
    }
}

/// An entry as the feed shows it; a removed one, or one whose activity is
/// already gone (deleted or expired by a later epoch), as its `id` and `time`.
fn entry(key: &FeedKey, activity: Option<Arc<Activity>>) -> String {
    match activity {
        Some(activity) => {
            serde_json::to_string(&EntryOut::from(activity.as_ref())).expect("entries serialize")
        }
        None => json!({"id": &*key.id, "time": format_time(key.time)}).to_string(),
    }
}
