//! The Redis store. Key layout (an app may read it with any Redis client):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `PREFIX:feed:{USER}` | sorted set | the user's feed head: member = activity id, score = time in ms. Redis orders equal scores by member bytes, so `ZREVRANGE key 0 -1` is exactly SPEC order (newest first, ties by id descending). Never more than `feed_size` members. |
//! | `PREFIX:activity:ID` | string | the activity as the HTTP API shows an entry (JSON), stored once however many feeds refer to it |
//! | `PREFIX:digest:NAME:{USER}` | sorted set | the user's digest head (`NAME` is the digest's name, `notifications` for the notification feed): member = group key, score = minus the group's newest activity time in ms, so `ZRANGE key 0 -1` is exactly SPEC order (newest group first, ties by key ascending). Never more than `digest_size` members. |
//! | `PREFIX:group:NAME:{USER}` | hash | field = group key, value = the group as the HTTP API shows it (JSON) |
//! | `PREFIX:marks:{USER}` | hash | field = notification group key, value = `{"seen": {"time", "id"}, "read": ...}`: the group's newest activity when it was marked; a group is seen (read) while its newest activity is not newer |
//!
//! `{USER}` is a Redis Cluster hash tag, so every key of one user shares a slot.
//! Writes are pipelined, one pipeline per epoch, worker and node, and
//! idempotent (ZADD/ZREM/SET/DEL), so a replayed epoch changes nothing.
//! Each user's changes are one transaction, its runs of one command on one
//! key merged into one variadic command.

mod nodes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use redis::{Cmd, Commands};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::RedisSinkConfig;
use crate::digest::GroupChange;
use crate::digest::{Group, Marks};
use crate::error::{Error, Result};
use crate::event::{parse_time, Activity, TypedId};
use crate::feed::EntryOut;
use crate::feed::FeedKey;
use crate::store::{DigestPage, FeedPage, PageStart, Store, StoreStats, WriteBatch};

/// The member of `PREFIX:written` whose score is the time before which
/// the set was trimmed (not a user: it has no `kind:`).
const FORGOTTEN_BEFORE: &str = "forgotten-before";

/// Feed heads and activities in Redis.
pub struct RedisStore {
    nodes: nodes::Nodes,
    prefix: String,
    pipeline: usize,
    /// Whether each write also records its users in `PREFIX:written`
    /// (with checkpoints: a resume rewrites only those).
    record_writes: bool,
}

#[derive(Deserialize)]
struct StoredEntry {
    id: String,
    time: String,
    actor: TypedId,
    verb: String,
    object: TypedId,
    target: Option<TypedId>,
    extra: Option<Box<RawValue>>,
}

/// A command with its arguments.
macro_rules! command {
    ($name:expr $(, $arg:expr)*) => {{
        let mut cmd = redis::cmd($name);
        $(cmd.arg($arg);)*
        cmd
    }};
}

/// Members or fields one merged command takes at most.
const MERGED_MAX: usize = 512;

/// One user's commands, written as one transaction. Each key's run of one
/// command (ZADD, ZREM, HSET, HDEL) is merged into one variadic command: a
/// head written whole is a DEL and one ZADD, not a DEL and 100 ZADDs.
/// Each key's commands keep their order; other keys' may come between,
/// which inside one transaction changes nothing.
struct Unit {
    commands: Vec<Cmd>,
    /// Each key's last command: its key, its place, its name and how many
    /// members or fields it holds. A user has few keys: a list, the feed
    /// key first (with no command yet: an empty name).
    last: Vec<(String, usize, &'static str, usize)>,
}

impl Unit {
    fn new(feed: String) -> Unit {
        Unit {
            commands: Vec::new(),
            last: vec![(feed, 0, "", 0)],
        }
    }

    /// `name FEED ARGS` on the user's feed key.
    fn push_feed(&mut self, name: &'static str, args: impl FnOnce(&mut Cmd)) {
        self.push_on(0, name, args);
    }

    /// `name key ARGS`, where `args` adds one member's or field's arguments.
    fn push(&mut self, name: &'static str, key: &str, args: impl FnOnce(&mut Cmd)) {
        let at = match self.last.iter().position(|last| last.0 == key) {
            Some(at) => at,
            None => {
                self.last.push((key.to_owned(), 0, "", 0));
                self.last.len() - 1
            }
        };
        self.push_on(at, name, args);
    }

    /// `name KEY ARGS` on the key `self.last[at]` names.
    fn push_on(&mut self, at: usize, name: &'static str, args: impl FnOnce(&mut Cmd)) {
        let (key, place, last_name, held) = &mut self.last[at];
        if *last_name == name && name != "DEL" && *held < MERGED_MAX {
            args(&mut self.commands[*place]);
            *held += 1;
            return;
        }
        let mut cmd = redis::cmd(name);
        cmd.arg(key.as_str());
        args(&mut cmd);
        (*place, *last_name, *held) = (self.commands.len(), name, 1);
        self.commands.push(cmd);
    }
}

impl RedisStore {
    /// A store as configured (`url`: `redis://[:password@]host:port[/db]`,
    /// or `rediss://` for TLS; every key under `prefix`). Says hello to the
    /// server once: a wrong password or a user without permission is an
    /// error now (it would never pass), while a server that is down now is
    /// retried later, not an error.
    pub fn open(config: &RedisSinkConfig) -> Result<RedisStore> {
        let store = RedisStore::connect_lazily(config)?;
        match store.nodes.on_seed(|c| redis::cmd("PING").query::<()>(c)) {
            Err(error) if !error.is_retryable() => Err(error),
            _ => Ok(store),
        }
    }

    fn connect_lazily(config: &RedisSinkConfig) -> Result<RedisStore> {
        let ca = match &config.tls_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| Error::Setting {
                setting: "sink.tls_ca_file",
                message: format!("{}: {e}", path.display()),
            })?),
            None => None,
        };
        Ok(RedisStore {
            nodes: nodes::Nodes::new(&config.url, ca, config.cluster)?,
            prefix: config.prefix.clone(),
            pipeline: config.pipeline.max(1),
            record_writes: false,
        })
    }

    /// Records, with every write, the users it writes and when (the sorted
    /// set `PREFIX:written`, scored with the batch's `written_at`, the
    /// newest kept), so that a resume from a checkpoint rewrites only the
    /// users written since it ([`Store::written_since`]).
    pub fn recording_writes(mut self) -> RedisStore {
        self.record_writes = true;
        self
    }

    /// The key of the sorted set of users written, by when.
    pub fn written_key(&self) -> String {
        format!("{}:written", self.prefix)
    }

    /// Each user's feed and digest changes in `batch`: one unit (a
    /// transaction) per user, with the slot of the user's keys; and the
    /// users, in the units' order.
    fn user_units<'b>(&self, batch: &'b WriteBatch) -> (Vec<(u16, Vec<Cmd>)>, Vec<&'b TypedId>) {
        let mut users: Vec<(u16, Unit)> = Vec::new();
        let mut by_user: HashMap<&TypedId, usize> = HashMap::new();
        let mut names: Vec<&TypedId> = Vec::new();
        let mut unit_of = |user, users: &mut Vec<(u16, Unit)>| {
            *by_user.entry(user).or_insert_with(|| {
                let feed = self.feed_key(user);
                users.push((self.nodes.slot(&feed), Unit::new(feed)));
                names.push(user);
                users.len() - 1
            })
        };
        for (user, key, diff) in &batch.feed {
            let at = unit_of(user, &mut users);
            let unit = &mut users[at].1;
            match diff {
                0 => unit.push_feed("DEL", |_| ()),
                d if *d > 0 => unit.push_feed("ZADD", |cmd| {
                    cmd.arg(key.time).arg(&*key.id);
                }),
                _ => unit.push_feed("ZREM", |cmd| {
                    cmd.arg(&*key.id);
                }),
            }
        }
        for change in &batch.digests {
            let (digest, groups) = (
                self.digest_key(&change.digest, &change.user),
                self.groups_key(&change.digest, &change.user),
            );
            let at = unit_of(&change.user, &mut users);
            let unit = &mut users[at].1;
            match &change.change {
                GroupChange::Put(group) => {
                    let json = serde_json::to_string(group.as_ref()).expect("serializable");
                    unit.push("ZADD", &digest, |cmd| {
                        cmd.arg(-group.last_time).arg(&*group.key);
                    });
                    unit.push("HSET", &groups, |cmd| {
                        cmd.arg(&*group.key).arg(&json);
                    });
                }
                GroupChange::Remove(key) => {
                    unit.push("ZREM", &digest, |cmd| {
                        cmd.arg(key);
                    });
                    unit.push("HDEL", &groups, |cmd| {
                        cmd.arg(key);
                    });
                }
                // Two single-key commands: a slot being migrated refuses
                // multi-key ones (TRYAGAIN) even inside a transaction.
                GroupChange::Reset => {
                    unit.push("DEL", &digest, |_| ());
                    unit.push("DEL", &groups, |_| ());
                }
            }
        }
        let users = users
            .into_iter()
            .map(|(slot, unit)| (slot, unit.commands))
            .collect();
        (users, names)
    }

    /// `ZADD PREFIX:written GT WRITTEN_AT user...` for `users` (none: nothing).
    fn record(&self, written_at: u64, users: &[&TypedId]) -> Option<(u16, Vec<Cmd>)> {
        if !self.record_writes || users.is_empty() {
            return None;
        }
        let key = self.written_key();
        let mut zadd = command!("ZADD", &key, "GT");
        for user in users {
            zadd.arg(written_at).arg(user.as_str());
        }
        Some((self.nodes.slot(&key), vec![zadd]))
    }

    /// The key of `user`'s feed head.
    pub fn feed_key(&self, user: &TypedId) -> String {
        format!("{}:feed:{{{}}}", self.prefix, user)
    }

    /// The key of `user`'s digest head named `digest` (a sorted set).
    pub fn digest_key(&self, digest: &str, user: &TypedId) -> String {
        format!("{}:digest:{}:{{{}}}", self.prefix, digest, user)
    }

    /// The key of the groups of `user`'s digest named `digest` (a hash).
    pub fn groups_key(&self, digest: &str, user: &TypedId) -> String {
        format!("{}:group:{}:{{{}}}", self.prefix, digest, user)
    }

    /// The key of `user`'s notification marks (a hash).
    pub fn marks_key(&self, user: &TypedId) -> String {
        format!("{}:marks:{{{}}}", self.prefix, user)
    }

    /// Keys matching `pattern`, on every master.
    fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        self.nodes.scan(pattern)
    }

    /// Users whose keys match `PREFIX:KIND:{USER}`.
    fn scan_users(&self, kind: &str) -> Result<Vec<TypedId>> {
        let names = self.scan(&format!("{}:{kind}:*", self.prefix))?;
        let skip = self.prefix.len() + kind.len() + ":{".len() + 1;
        Ok(names
            .iter()
            .filter_map(|n| TypedId::parse(n.get(skip..n.len().saturating_sub(1))?))
            .collect())
    }

    /// The key of an activity.
    pub fn activity_key(&self, id: &str) -> String {
        format!("{}:activity:{}", self.prefix, id)
    }

    /// Runs `f` on a pooled connection to the node that holds `key`.
    fn with<T>(
        &self,
        key: &str,
        f: impl FnOnce(&mut nodes::Link<'_>) -> redis::RedisResult<T>,
    ) -> Result<T> {
        self.nodes.with(key, f)
    }

    fn parse(&self, json: &str) -> Option<Arc<Activity>> {
        let stored: StoredEntry = serde_json::from_str(json).ok()?;
        Some(Arc::new(Activity {
            id: stored.id.into(),
            time: parse_time(&serde_json::to_string(&stored.time).ok()?)?,
            actor: stored.actor,
            verb: stored.verb.into(),
            object: stored.object,
            target: stored.target,
            extra: stored.extra.map(|e| e.get().into()),
        }))
    }

    fn activities(&self, keys: &[FeedKey]) -> Result<Vec<Arc<Activity>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let found: Vec<Option<String>> = self.nodes.each(
            keys.iter()
                .map(|k| {
                    let key = self.activity_key(&k.id);
                    (key.clone(), command!("GET", key))
                })
                .collect(),
        )?;
        Ok(found
            .iter()
            .flatten()
            .filter_map(|json| self.parse(json))
            .collect())
    }

    fn keys(members: Vec<(String, f64)>) -> Vec<FeedKey> {
        members
            .into_iter()
            .map(|(id, score)| FeedKey::new(score as i64, id))
            .collect()
    }
}

impl Store for RedisStore {
    fn apply(&self, batch: &WriteBatch) -> Result<()> {
        // Units of commands that must be applied together, each with its
        // slot: each activity, each user's feed and digest changes, each
        // removal. Three phases, in this order, so a reader never meets an
        // entry whose activity is not stored (on a cluster, activities and
        // feeds live on different nodes).
        let activity = |name: &str, id: &str| {
            let key = self.activity_key(id);
            (self.nodes.slot(&key), vec![command!(name, key)])
        };
        let puts: Vec<(u16, Vec<Cmd>)> = batch
            .puts
            .iter()
            .map(|a| {
                let json =
                    serde_json::to_string(&EntryOut::from(a.as_ref())).expect("serializable");
                let (slot, mut set) = activity("SET", &a.id);
                set[0].arg(json);
                (slot, set)
            })
            .collect();
        let (users, written) = self.user_units(batch);
        let removes = batch.removes.iter().map(|id| activity("DEL", id)).collect();
        // The users are recorded before their writes (in the same
        // transaction on one server, a phase before on a cluster): a write
        // applied is always recorded.
        let recorded: Vec<_> = self
            .record(batch.written_at, &written)
            .into_iter()
            .collect();
        if !self.nodes.cluster() {
            // One server: the phases in one round trip (or as few as
            // `pipeline` allows), in order.
            let all = (puts.into_iter().chain(recorded))
                .chain(users)
                .chain(removes)
                .collect();
            return self.nodes.transact(all, self.pipeline);
        }
        for phase in [puts, recorded, users, removes] {
            self.nodes.transact(phase, self.pipeline)?;
        }
        Ok(())
    }

    fn feed_page(&self, user: &TypedId, start: &PageStart, limit: usize) -> Result<FeedPage> {
        let feed = self.feed_key(user);
        let (members, more) = start.page(limit, |after, skip, count| {
            let from = skip
                + match after {
                    None => 0,
                    // Entries newer than `after`: strictly higher scores, plus
                    // equal scores with a larger id (the cursor's entry may be gone).
                    Some(after) => self.with(&feed, |c| {
                        let higher: usize = c.zcount(&feed, format!("({}", after.time), "+inf")?;
                        let ties: Vec<String> = c.zrangebyscore(&feed, after.time, after.time)?;
                        Ok(higher + ties.iter().filter(|id| id.as_str() >= &*after.id).count())
                    })?,
                };
            let last = from
                .saturating_add(count)
                .saturating_sub(1)
                .min(isize::MAX as usize);
            self.with(&feed, |c| {
                c.zrevrange_withscores::<_, Vec<(String, f64)>>(&feed, from as isize, last as isize)
            })
        })?;
        let keys = Self::keys(members);
        Ok(FeedPage {
            entries: self.activities(&keys)?,
            next_cursor: if more {
                keys.last().map(FeedKey::cursor)
            } else {
                None
            },
        })
    }

    fn activity(&self, id: &str) -> Result<Option<Arc<Activity>>> {
        let key = self.activity_key(id);
        let json: Option<String> = self.with(&key, |c| c.get(&key))?;
        Ok(json.and_then(|j| self.parse(&j)))
    }

    fn feed_keys(&self, user: &TypedId) -> Result<Vec<FeedKey>> {
        let feed = self.feed_key(user);
        let members: Vec<(String, f64)> =
            self.with(&feed, |c| c.zrevrange_withscores(&feed, 0, -1))?;
        Ok(Self::keys(members))
    }

    fn users(&self) -> Result<Vec<TypedId>> {
        self.scan_users("feed")
    }

    fn digest_page(
        &self,
        user: &TypedId,
        digest: &str,
        start: &PageStart,
        limit: usize,
    ) -> Result<DigestPage> {
        let (zset, hash) = (self.digest_key(digest, user), self.groups_key(digest, user));
        let (keys, more) = start.page(limit, |after, skip, count| {
            let from = skip
                + match after {
                    None => 0,
                    // Groups before the cursor's place: newer (lower score), plus
                    // equally new with a key not after it (the group may be gone).
                    Some(after) => {
                        let score = -(after.time as f64);
                        self.with(&zset, |c| {
                            let lower: usize = c.zcount(&zset, "-inf", format!("({score}"))?;
                            let ties: Vec<String> = c.zrangebyscore(&zset, score, score)?;
                            Ok(lower + ties.iter().filter(|k| k.as_str() <= &*after.id).count())
                        })?
                    }
                };
            let last = from
                .saturating_add(count)
                .saturating_sub(1)
                .min(isize::MAX as usize);
            self.with(&zset, |c| {
                c.zrange::<_, Vec<String>>(&zset, from as isize, last as isize)
            })
        })?;
        let groups: Vec<Arc<Group>> = if keys.is_empty() {
            Vec::new()
        } else {
            let found: Vec<Option<String>> =
                self.with(&hash, |c| redis::cmd("HMGET").arg(&hash).arg(keys).query(c))?;
            found
                .iter()
                .flatten()
                .filter_map(|json| serde_json::from_str(json).ok().map(Arc::new))
                .collect()
        };
        Ok(DigestPage::new(groups, more))
    }

    fn digest_users(&self, digest: &str) -> Result<Vec<TypedId>> {
        self.scan_users(&format!("digest:{digest}"))
    }

    fn marks(&self, user: &TypedId) -> Result<BTreeMap<String, Marks>> {
        let key = self.marks_key(user);
        let stored: BTreeMap<String, String> = self.with(&key, |c| c.hgetall(&key))?;
        Ok(stored
            .into_iter()
            .filter_map(|(key, json)| Some((key, serde_json::from_str(&json).ok()?)))
            .collect())
    }

    fn put_marks(&self, user: &TypedId, marks: &[(String, Marks)]) -> Result<()> {
        let fields: Vec<(String, String)> = marks
            .iter()
            .map(|(key, m)| (key.clone(), serde_json::to_string(m).expect("serializable")))
            .collect();
        let key = self.marks_key(user);
        self.with(&key, |c| c.hset_multiple(&key, &fields))
    }

    fn persistent(&self) -> bool {
        true
    }

    fn written_since(&self, since_ms: u64) -> Result<Option<HashSet<TypedId>>> {
        if !self.record_writes {
            return Ok(None);
        }
        let key = self.written_key();
        let users: Vec<String> = self.with(&key, |c| c.zrangebyscore(&key, since_ms, "+inf"))?;
        // Read after the range: a trim marks before it removes, so a
        // range that a trim cut short is always seen here.
        let forgotten: Option<f64> = self.with(&key, |c| c.zscore(&key, FORGOTTEN_BEFORE))?;
        if let Some(forgotten) = forgotten.map(|at| at as u64).filter(|&at| at > since_ms) {
            tracing::info!(
                since_ms,
                forgotten_before_ms = forgotten,
                "the store no longer knows whom it wrote since the checkpoint"
            );
            return Ok(None);
        }
        Ok(Some(
            users.iter().filter_map(|u| TypedId::parse(u)).collect(),
        ))
    }

    fn forget_written_before(&self, before_ms: u64) -> Result<()> {
        let key = self.written_key();
        self.with(&key, |c| {
            c.zadd_options::<_, _, _, ()>(
                &key,
                FORGOTTEN_BEFORE,
                before_ms,
                &redis::SortedSetAddOptions::add_or_update(Some(redis::UpdateCheck::GT)),
            )
        })?;
        self.with(&key, |c| {
            c.zrembyscore::<_, _, _, ()>(&key, "-inf", format!("({before_ms}"))
        })
    }

    fn stats(&self) -> StoreStats {
        // Counting keys is a scan: cheap enough for /status on test-sized data,
        // and never fatal.
        let counted = (|| -> Result<StoreStats> {
            let users = self.users()?;
            let cards: Vec<u64> = self.nodes.each(
                users
                    .iter()
                    .map(|user| {
                        let key = self.feed_key(user);
                        (key.clone(), command!("ZCARD", key))
                    })
                    .collect(),
            )?;
            let activities = self.scan(&format!("{}:activity:*", self.prefix))?.len() as u64;
            Ok(StoreStats {
                feeds: users.len() as u64,
                entries: cards.iter().sum(),
                activities,
            })
        })();
        counted.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(unit: &Unit) -> Vec<String> {
        let text = |arg: redis::Arg<&[u8]>| match arg {
            redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            _ => "?".into(),
        };
        let commands = unit.commands.iter();
        commands
            .map(|cmd| cmd.args_iter().map(text).collect::<Vec<_>>().join(" "))
            .collect()
    }

    /// Runs of one command on one key merge; each key's order holds; a
    /// DEL never merges; a merged command stops at `MERGED_MAX`.
    #[test]
    fn a_keys_runs_merge_and_keep_their_order() {
        let mut unit = Unit::new("f".into());
        let zadd = |score: i64, member: &'static str| {
            move |cmd: &mut Cmd| {
                cmd.arg(score).arg(member);
            }
        };
        unit.push("DEL", "f", |_| ());
        unit.push("ZADD", "f", zadd(1, "a"));
        unit.push("ZADD", "d", zadd(-1, "g"));
        unit.push("ZADD", "f", zadd(2, "b"));
        unit.push("ZREM", "f", |cmd| {
            cmd.arg("a");
        });
        unit.push("ZADD", "f", zadd(3, "a"));
        unit.push("DEL", "d", |_| ());
        unit.push("DEL", "d", |_| ());
        assert_eq!(
            texts(&unit),
            [
                "DEL f",
                "ZADD f 1 a 2 b",
                "ZADD d -1 g",
                "ZREM f a",
                "ZADD f 3 a",
                "DEL d",
                "DEL d"
            ]
        );
        let mut unit = Unit::new("f".into());
        for n in 0..MERGED_MAX + 1 {
            unit.push("ZREM", "f", |cmd| {
                cmd.arg(n);
            });
        }
        assert_eq!(unit.commands.len(), 2);
        assert_eq!(unit.commands[1].args_iter().count(), 3);
    }
}
