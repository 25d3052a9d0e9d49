//! Where a key lives: the one Redis server, or the master that owns the
//! key's slot in a Redis Cluster.
//!
//! The redis crate's own cluster connection routes single commands well, but
//! it does not pipeline (`supports_pipelining` is false), and feedstorm's
//! write path is one pipeline per node and epoch, with a MULTI/EXEC per slot
//! (a transaction cannot span slots). So the store routes by itself: it reads
//! the slot map with `CLUSTER SLOTS`, keeps plain connections per master, and
//! after any error reads the map again (a resharded slot answers MOVED, the
//! write fails, the sink retries it, and writes are idempotent).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use redis::{Client, Cmd, ConnectionAddr, ConnectionInfo, FromRedisValue, IntoConnectionInfo};
use redis::{Connection, Value};

use crate::error::{Error, Result};

/// Slots in a Redis Cluster.
const SLOTS: u16 = 16384;

/// A node's address, `host:port`.
pub(crate) type Addr = String;

/// `(first slot, last slot, master)`, sorted.
type SlotMap = Arc<Vec<(u16, u16, Addr)>>;

/// The Redis servers behind a store.
pub(crate) struct Nodes {
    seed: ConnectionInfo,
    seed_addr: Addr,
    ca: Option<Vec<u8>>,
    cluster: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Who serves which slot: on one server, the seed serves them all; on a
    /// cluster, empty until read, and again after an error.
    slots: SlotMap,
    /// Each node's client and idle connections.
    pools: HashMap<Addr, Pool>,
}

struct Pool {
    client: Client,
    idle: Vec<Connection>,
}

/// The cluster slot of `key`: CRC16 of its hash tag (the part between the
/// first `{` and the next `}`, if not empty) or of the whole key.
pub(crate) fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|b| *b == b'{').and_then(|open| {
        let close = key[open + 1..].iter().position(|b| *b == b'}')?;
        Some(&key[open + 1..open + 1 + close]).filter(|tag| !tag.is_empty())
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % SLOTS
}

impl Nodes {
    /// The server at `url` (one node of a cluster if `cluster`); `ca`: a PEM
    /// certificate authority for `rediss://`. Connects lazily.
    pub(crate) fn new(url: &str, ca: Option<Vec<u8>>, cluster: bool) -> Result<Nodes> {
        let seed = url.into_connection_info().map_err(|e| Error::Setting {
            setting: "sink.url",
            message: e.to_string(),
        })?;
        if matches!(seed.addr(), ConnectionAddr::Unix(_)) && cluster {
            return Err(Error::Setting {
                setting: "sink.cluster",
                message: "a cluster is reached over TCP, not a unix socket".into(),
            });
        }
        let seed_addr = match seed.addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                format!("{host}:{port}")
            }
            ConnectionAddr::Unix(path) => path.display().to_string(),
            other => format!("{other:?}"),
        };
        let state = State {
            slots: Arc::new(if cluster {
                Vec::new()
            } else {
                vec![(0, SLOTS - 1, seed_addr.clone())]
            }),
            pools: HashMap::new(),
        };
        let nodes = Nodes {
            seed,
            seed_addr,
            ca,
            cluster,
            state: Mutex::new(state),
        };
        nodes.client(&nodes.seed_addr)?;
        Ok(nodes)
    }

    /// Whether keys are spread over a cluster's slots.
    pub(crate) fn cluster(&self) -> bool {
        self.cluster
    }

    /// A client for the node at `addr`, with the seed's credentials and TLS.
    fn client(&self, addr: &str) -> Result<Client> {
        let info = if addr == self.seed_addr {
            self.seed.clone()
        } else {
            let (host, port) = addr
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_owned(), p.parse().ok()?)))
                .ok_or_else(|| Error::Sink(format!("redis: bad node address {addr}")))?;
            let node = match self.seed.addr() {
                ConnectionAddr::TcpTls {
                    insecure,
                    tls_params,
                    ..
                } => ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: *insecure,
                    tls_params: tls_params.clone(),
                },
                _ => ConnectionAddr::Tcp(host, port),
            };
            self.seed.clone().set_addr(node)
        };
        let client = match &self.ca {
            Some(ca) => Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            ),
            None => Client::open(info),
        };
        client.map_err(|e| Error::Setting {
            setting: "sink.url",
            message: e.to_string(),
        })
    }

    /// The slot of `key` (always 0 on a single server).
    pub(crate) fn slot(&self, key: &str) -> u16 {
        if self.cluster {
            slot(key.as_bytes())
        } else {
            0
        }
    }

    /// Every master (the one server, or each master of the cluster).
    pub(crate) fn masters(&self) -> Result<Vec<Addr>> {
        let mut masters: Vec<Addr> = self.slot_map()?.iter().map(|s| s.2.clone()).collect();
        masters.sort();
        masters.dedup();
        Ok(masters)
    }

    /// The slot map, read with `CLUSTER SLOTS` from the seed or any known
    /// node if it is not known.
    fn slot_map(&self) -> Result<SlotMap> {
        let mut asked: Vec<Addr> = {
            let state = self.state.lock().expect("nodes lock");
            if !state.slots.is_empty() {
                return Ok(state.slots.clone());
            }
            state.pools.keys().cloned().collect()
        };
        asked.sort();
        asked.insert(0, self.seed_addr.clone());
        let mut last_error = None;
        for addr in asked {
            let answer: Result<Vec<Value>> =
                self.on(&addr, |c| redis::cmd("CLUSTER").arg("SLOTS").query(c));
            match answer.and_then(|ranges| parse_slots(&ranges)) {
                Ok(slots) if !slots.is_empty() => {
                    let slots = Arc::new(slots);
                    self.state.lock().expect("nodes lock").slots = slots.clone();
                    return Ok(slots);
                }
                Ok(_) => last_error = Some(Error::Sink("redis: the cluster has no slots".into())),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("the seed was asked"))
    }

    /// Runs `f` on a connection to the node the store was configured with.
    pub(crate) fn on_seed<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        self.on(&self.seed_addr, f)
    }

    /// Runs `f` on a connection to the node at `addr`. A connection that
    /// failed is dropped, and so is the slot map (it may be out of date).
    pub(crate) fn on<T>(
        &self,
        addr: &str,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let pooled = {
            let mut state = self.state.lock().expect("nodes lock");
            if !state.pools.contains_key(addr) {
                let client = self.client(addr)?;
                let pool = Pool {
                    client,
                    idle: Vec::new(),
                };
                state.pools.insert(addr.to_owned(), pool);
            }
            let pool = state.pools.get_mut(addr).expect("inserted");
            pool.idle.pop().ok_or_else(|| pool.client.clone())
        };
        let mut connection = match pooled {
            Ok(c) => c,
            Err(client) => client.get_connection().map_err(|e| self.failed(e))?,
        };
        let result = f(&mut connection).map_err(|e| self.failed(e))?;
        let mut state = self.state.lock().expect("nodes lock");
        if let Some(pool) = state.pools.get_mut(addr) {
            pool.idle.push(connection);
        }
        Ok(result)
    }

    fn failed(&self, error: redis::RedisError) -> Error {
        if self.cluster {
            self.state.lock().expect("nodes lock").slots = SlotMap::default();
        }
        Error::Redis(error)
    }

    /// Runs `f` on a connection to the node that holds `key`.
    pub(crate) fn with<T>(
        &self,
        key: &str,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let slots = self.slot_map()?;
        self.on(owner(&slots, self.slot(key))?, f)
    }

    /// Runs each `(key, command)`, pipelined per node, and answers the
    /// results in the commands' order.
    pub(crate) fn each<T: FromRedisValue>(&self, commands: Vec<(String, Cmd)>) -> Result<Vec<T>> {
        let slots = self.slot_map()?;
        let mut by_node: BTreeMap<&str, (Vec<usize>, redis::Pipeline)> = BTreeMap::new();
        let count = commands.len();
        for (at, (key, cmd)) in commands.into_iter().enumerate() {
            let (places, pipe) = by_node.entry(owner(&slots, self.slot(&key))?).or_default();
            places.push(at);
            pipe.add_command(cmd);
        }
        let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
        for (node, (places, pipe)) in by_node {
            let values: Vec<T> = self.on(node, |c| pipe.query(c))?;
            for (at, value) in places.into_iter().zip(values) {
                results[at] = Some(value);
            }
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// Applies `units` (each a slot and commands that must apply together):
    /// one MULTI/EXEC per slot and round trip, round trips of about `per_trip`
    /// commands, one node after another.
    pub(crate) fn transact(&self, units: Vec<(u16, Vec<Cmd>)>, per_trip: usize) -> Result<()> {
        let slots = self.slot_map()?;
        let mut by_node: BTreeMap<&str, Vec<(u16, Vec<Cmd>)>> = BTreeMap::new();
        for (slot, commands) in units {
            by_node
                .entry(owner(&slots, slot)?)
                .or_default()
                .push((slot, commands));
        }
        for (node, mut units) in by_node {
            units.sort_by_key(|(slot, _)| *slot);
            self.on(node, |c| {
                let mut pipe = redis::pipe();
                let (mut queued, mut open) = (0, None);
                for (slot, commands) in units {
                    if queued > 0 && queued + commands.len() > per_trip {
                        pipe.cmd("EXEC").ignore();
                        pipe.query::<()>(c)?;
                        pipe.clear();
                        (queued, open) = (0, None);
                    }
                    if open != Some(slot) {
                        if open.is_some() {
                            pipe.cmd("EXEC").ignore();
                        }
                        pipe.cmd("MULTI").ignore();
                        open = Some(slot);
                    }
                    queued += commands.len();
                    for cmd in commands {
                        pipe.add_command(cmd).ignore();
                    }
                }
                if open.is_some() {
                    pipe.cmd("EXEC").ignore();
                    pipe.query::<()>(c)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// The node of `slots` that serves `slot`.
fn owner(slots: &[(u16, u16, Addr)], slot: u16) -> Result<&str> {
    let at = slots.partition_point(|(_, last, _)| *last < slot);
    match slots.get(at) {
        Some((first, _, addr)) if *first <= slot => Ok(addr),
        _ => Err(Error::Sink(format!(
            "redis: no cluster node serves slot {slot}"
        ))),
    }
}

/// `CLUSTER SLOTS`: `[[first, last, [host, port, id, ...], replicas...], ...]`.
fn parse_slots(ranges: &[Value]) -> Result<Vec<(u16, u16, Addr)>> {
    let bad = || Error::Sink("redis: unexpected CLUSTER SLOTS answer".into());
    let mut slots = Vec::new();
    for range in ranges {
        let Value::Array(range) = range else {
            return Err(bad());
        };
        let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(master))) =
            (range.first(), range.get(1), range.get(2))
        else {
            return Err(bad());
        };
        let host = master
            .first()
            .and_then(|h| String::from_redis_value_ref(h).ok())
            .ok_or_else(bad)?;
        let Some(Value::Int(port)) = master.get(1) else {
            return Err(bad());
        };
        slots.push((*first as u16, *last as u16, format!("{host}:{port}")));
    }
    slots.sort();
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::slot;

    #[test]
    fn slots_follow_the_cluster_spec() {
        // The examples of https://redis.io/docs/reference/cluster-spec/.
        // CRC16/XMODEM("123456789") = 0x31C3, below 16384.
        assert_eq!(slot(b"123456789"), 0x31C3);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
        assert_eq!(slot(b"feedstorm:feed:{user:1}"), slot(b"user:1"));
    }
}
