//! Where a key lives: the one Redis server, or the master that owns the
//! key's slot in a Redis Cluster.
//!
//! **Reads** on a cluster go through the redis crate's own cluster client
//! ([`ClusterClient`]): it routes each command by its key's slot and follows
//! `MOVED` and `ASK` itself; a read pipeline is a [`ClusterPipeline`], and
//! `SCAN` is sent to each master by address.
//!
//! **Writes** keep their own routing, because the redis crate routes a whole
//! pipeline by its first command's slot (one round trip per slot), while the
//! sink writes one pipeline per node and epoch holding a MULTI/EXEC per slot
//! (a transaction cannot span slots): thousands of slots' transactions in one
//! round trip. So the write path reads the slot map with `CLUSTER SLOTS`,
//! keeps plain connections per master, and after an error reads the map
//! again (a resharded slot answers `MOVED`: the write fails, the sink retries
//! it, and writes are idempotent). A slot being migrated answers `ASK` for
//! keys it no longer holds, and the importing node refuses a transaction
//! over keys it does not all hold yet (`TRYAGAIN`): so the commands of a
//! slot's transaction that met `ASK` are sent again one by one, each where
//! its key is (after `ASKING` on the importing node). While a slot moves,
//! its users' writes of one epoch are therefore not one transaction.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use redis::cluster::{ClusterClient, ClusterConnection, ClusterPipeline};
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Arg, Client, Cmd, ConnectionAddr, ConnectionInfo, FromRedisValue, IntoConnectionInfo};
use redis::{Connection, ConnectionLike, RedisResult, ServerErrorKind, Value};

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
    /// On a cluster, the redis crate's cluster client for reads.
    reads: Option<Reads>,
}

/// The redis crate's cluster client and its idle connections.
struct Reads {
    client: ClusterClient,
    idle: Mutex<Vec<ClusterConnection>>,
}

/// A connection for reads: to the one server, or the redis crate's cluster
/// connection (which routes each command and follows redirections).
pub(crate) enum Link<'a> {
    /// The one server.
    Node(&'a mut Connection),
    /// A cluster.
    Cluster(&'a mut ClusterConnection),
}

impl ConnectionLike for Link<'_> {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        match self {
            Link::Node(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match self {
            Link::Node(c) => c.req_packed_commands(cmd, offset, count),
            Link::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Link::Node(c) => c.req_command(cmd),
            Link::Cluster(c) => c.req_command(cmd),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Node(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }

    fn supports_pipelining(&self) -> bool {
        match self {
            Link::Node(c) => c.supports_pipelining(),
            Link::Cluster(c) => c.supports_pipelining(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Link::Node(c) => c.check_connection(),
            Link::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Link::Node(c) => c.is_open(),
            Link::Cluster(c) => c.is_open(),
        }
    }
}

impl Reads {
    fn new(seed: &ConnectionInfo, ca: &Option<Vec<u8>>) -> Result<Reads> {
        let mut builder = redis::cluster::ClusterClientBuilder::new(vec![seed.clone()]);
        if let Some(ca) = ca {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            });
        }
        let client = builder.build().map_err(|e| Error::Setting {
            setting: "sink.url",
            message: e.to_string(),
        })?;
        Ok(Reads {
            client,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Runs `f` on an idle cluster connection or a new one; a connection
    /// that failed is dropped.
    fn with<T>(&self, f: impl FnOnce(&mut ClusterConnection) -> RedisResult<T>) -> RedisResult<T> {
        let idle = self.idle.lock().expect("reads lock").pop();
        let mut connection = match idle {
            Some(c) => c,
            None => self.client.get_connection()?,
        };
        let result = f(&mut connection)?;
        self.idle.lock().expect("reads lock").push(connection);
        Ok(result)
    }
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
        let reads = if cluster {
            Some(Reads::new(&seed, &ca)?)
        } else {
            None
        };
        let nodes = Nodes {
            seed,
            seed_addr,
            ca,
            cluster,
            state: Mutex::new(state),
            reads,
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
            let (host, port) = host_port(addr)
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

    /// Every key matching `pattern`: `SCAN` on the one server, or on each
    /// master of the cluster through the cluster client.
    pub(crate) fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        let Some(reads) = &self.reads else {
            return self.on(&self.seed_addr, |c| scan_with(pattern, |cmd| cmd.query(c)));
        };
        // The masters as the write path knows them; a stale map fails the
        // scan and is read again.
        let slots = self.slot_map()?;
        let mut masters: Vec<&str> = slots.iter().map(|(_, _, addr)| addr.as_str()).collect();
        masters.sort_unstable();
        masters.dedup();
        let scanned = reads.with(|c| {
            let mut keys = Vec::new();
            for master in masters {
                keys.extend(scan_node(c, master, pattern)?);
            }
            Ok(keys)
        });
        scanned.map_err(|e| self.failed(e))
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

    /// Runs `f` on a connection that reaches `key`: the one server's, or
    /// the cluster client's.
    pub(crate) fn with<T>(
        &self,
        key: &str,
        f: impl FnOnce(&mut Link<'_>) -> redis::RedisResult<T>,
    ) -> Result<T> {
        match &self.reads {
            Some(reads) => reads
                .with(|c| f(&mut Link::Cluster(c)))
                .map_err(|e| self.failed(e)),
            None => {
                let slots = self.slot_map()?;
                self.on(owner(&slots, self.slot(key))?, |c| f(&mut Link::Node(c)))
            }
        }
    }

    /// Runs each `(key, command)` (reads), pipelined per node, and answers
    /// the results in the commands' order.
    pub(crate) fn each<T: FromRedisValue>(&self, commands: Vec<(String, Cmd)>) -> Result<Vec<T>> {
        if let Some(reads) = &self.reads {
            let mut pipe = ClusterPipeline::with_capacity(commands.len());
            for (_, cmd) in commands {
                pipe.add_command(cmd);
            }
            return reads.with(|c| pipe.query(c)).map_err(|e| self.failed(e));
        }
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
        let mut by_node: BTreeMap<&str, BTreeMap<u16, Vec<Cmd>>> = BTreeMap::new();
        for (slot, commands) in units {
            by_node
                .entry(owner(&slots, slot)?)
                .or_default()
                .entry(slot)
                .or_default()
                .extend(commands);
        }
        for (node, blocks) in by_node {
            self.transact_on(node, blocks.into_iter().collect(), per_trip)?;
        }
        Ok(())
    }

    /// Sends each block (a slot's commands) to `node` as one transaction.
    /// A block some of whose keys the node asked to move (`ASK`: the slot
    /// is being migrated) was not applied; its commands are sent again one
    /// by one, each to the node that holds its key (the importing node
    /// after `ASKING`). Any other error fails the call (the sink retries).
    fn transact_on(&self, node: &str, blocks: Vec<(u16, Vec<Cmd>)>, per_trip: usize) -> Result<()> {
        for trip in trips(blocks, per_trip) {
            let pipe = transactions(&trip);
            match self.on(node, |c| pipe.query::<()>(c)) {
                Ok(()) => {}
                Err(Error::Redis(error)) => self.redirect_asked(node, &trip, error)?,
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// After `trip`'s pipeline to `node` failed with `error`: sends the
    /// commands of the blocks that met `ASK` one by one, each where its
    /// key is; fails if any other block failed.
    fn redirect_asked(
        &self,
        node: &str,
        trip: &[(u16, Vec<Cmd>)],
        error: redis::RedisError,
    ) -> Result<()> {
        let Some(errors) = error.clone().into_server_errors() else {
            return Err(Error::Redis(error));
        };
        let asked: HashMap<usize, &str> = errors
            .iter()
            .filter(|(_, e)| e.kind() == Some(ServerErrorKind::Ask))
            .filter_map(|(index, e)| Some((*index, e.details()?.split_whitespace().nth(1)?)))
            .collect();
        if asked.is_empty() {
            return Err(Error::Redis(error));
        }
        let mut here = redis::pipe();
        let mut there: BTreeMap<&str, redis::Pipeline> = BTreeMap::new();
        let mut at = 0;
        for (_, commands) in trip {
            // MULTI, the commands, EXEC.
            let first = at + 1;
            let exec = first + commands.len();
            at = exec + 1;
            if !(first..exec).any(|i| asked.contains_key(&i)) {
                if errors.iter().any(|(i, _)| (first..=exec).contains(i)) {
                    return Err(Error::Redis(error));
                }
                continue;
            }
            for (k, cmd) in commands.iter().enumerate() {
                match asked.get(&(first + k)) {
                    Some(to) => {
                        let pipe = there.entry(to).or_default();
                        pipe.cmd("ASKING").ignore();
                        pipe.add_command(cmd.clone()).ignore();
                    }
                    None => {
                        here.add_command(cmd.clone()).ignore();
                    }
                }
            }
        }
        if !here.is_empty() {
            self.on(node, |c| here.query::<()>(c))?;
        }
        for (to, pipe) in there {
            self.on(to, |c| pipe.query::<()>(c))?;
        }
        Ok(())
    }
}

/// What `commands` weigh in a round trip: a merged command (a ZADD of a
/// whole head) as the single commands it stands for.
fn weight(commands: &[Cmd]) -> usize {
    commands
        .iter()
        .map(|cmd| {
            // Its name and key, then one or two arguments per member or field.
            let mut args = cmd.args_iter();
            let pairs = matches!(args.next(), Some(Arg::Simple(b"ZADD" | b"HSET")));
            let held = args.count().saturating_sub(1);
            if pairs { held / 2 } else { held }.max(1)
        })
        .sum()
}

/// `blocks` cut into round trips of about `per_trip` commands (merged
/// ones counted by what they hold).
fn trips(blocks: Vec<(u16, Vec<Cmd>)>, per_trip: usize) -> Vec<Vec<(u16, Vec<Cmd>)>> {
    let mut trips: Vec<Vec<(u16, Vec<Cmd>)>> = vec![Vec::new()];
    let mut queued = 0;
    for block in blocks {
        let writes = weight(&block.1);
        if queued > 0 && queued + writes > per_trip {
            trips.push(Vec::new());
            queued = 0;
        }
        queued += writes;
        trips.last_mut().expect("one trip at least").push(block);
    }
    trips
}

/// One pipeline of `trip`'s transactions, each `MULTI cmds EXEC`.
fn transactions(trip: &[(u16, Vec<Cmd>)]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for (_, commands) in trip {
        pipe.cmd("MULTI").ignore();
        for cmd in commands {
            pipe.add_command(cmd.clone()).ignore();
        }
        pipe.cmd("EXEC").ignore();
    }
    pipe
}

/// The host and port of a node's address, `host:port`.
fn host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

/// `SCAN ... MATCH pattern` on the master at `addr`, to the end.
fn scan_node(c: &mut ClusterConnection, addr: &str, pattern: &str) -> RedisResult<Vec<String>> {
    let (host, port) = host_port(addr)
        .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Parse, "bad node address")))?;
    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
    scan_with(pattern, |cmd| {
        Ok(redis::from_redis_value(
            c.route_command(cmd, route.clone())?,
        )?)
    })
}

/// Every key matching `pattern` on one server, `SCAN` by `SCAN` through
/// `query`. A thousand keys a step: the server's default of ten makes a
/// recovery's scans of a big keyspace thousands of round trips each.
fn scan_with(
    pattern: &str,
    mut query: impl FnMut(&Cmd) -> RedisResult<(u64, Vec<String>)>,
) -> RedisResult<Vec<String>> {
    let (mut cursor, mut keys) = (0u64, Vec::new());
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1_000);
        let (next, found) = query(&cmd)?;
        keys.extend(found);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
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
