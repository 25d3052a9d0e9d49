//! What each operator does, from timely's own logging: the records into
//! and out of each of the topology's operators (the bolts, the sink, and
//! the inputs the spouts feed), the records along each edge between them,
//! each operator's busy time and its busy time per epoch, over sliding
//! windows of 1 and 10 minutes and since the start. `GET /api/v1/topology`
//! and `/ui` show them (Storm UI's executed, transferred and capacity).
//!
//! Each worker registers a logger on timely's `"timely"` log before it
//! builds the topology ([`Operators::observe`]). The logger learns the
//! operators and channels from their creation events, then counts the
//! records of every message received and sent (`MessagesEvent`) and the time
//! between each operator's start and stop (`ScheduleEvent`). An operator
//! without a name of the topology's (a `map`, an exchange) is passed
//! through: an edge joins the named operators at its ends. Counts gather
//! per worker and go to the process's [`Operators`] every 100 ms.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};
use timely::worker::Worker;

/// A node of the graph: one of the topology's operator names, or [`SPOUTS`]
/// (static, so counting a message allocates nothing).
type Node = &'static str;

/// The node the dataflow's inputs (what the spouts send in) appear as.
pub const SPOUTS: &str = "spouts";

/// Width of one bucket of the sliding windows.
const BUCKET: Duration = Duration::from_secs(10);
/// Buckets kept: 10 minutes.
const BUCKETS: u64 = 60;
/// The windows shown, and how many buckets each spans (`None`: all time).
const WINDOWS: [(&str, Option<u64>); 3] = [("1m", Some(6)), ("10m", Some(BUCKETS)), ("all", None)];
/// How often a worker hands its counts to the process.
const HAND_OVER: Duration = Duration::from_millis(100);

/// Counts of one operator (or edge) over some span.
#[derive(Clone)]
struct Counts {
    records_in: u64,
    records_out: u64,
    busy: Duration,
    /// Busy microseconds per epoch written (operators only).
    per_epoch: Option<Histogram<u32>>,
}

impl Counts {
    fn new(operator: bool) -> Counts {
        Counts {
            records_in: 0,
            records_out: 0,
            busy: Duration::ZERO,
            // One significant digit (10% steps) up to an hour keeps a
            // histogram under 2 KB.
            per_epoch: operator.then(|| {
                Histogram::new_with_bounds(1, 3_600_000_000, 1).expect("histogram bounds")
            }),
        }
    }

    /// Back to zero, keeping the histogram's allocation: handed over ten
    /// times a second, a fresh one each time was a 2 KB allocation, which
    /// has glibc consolidate every small free chunk of the arena first.
    fn clear(&mut self) {
        self.records_in = 0;
        self.records_out = 0;
        self.busy = Duration::ZERO;
        if let Some(per_epoch) = &mut self.per_epoch {
            per_epoch.reset();
        }
    }

    fn add(&mut self, other: &Counts) {
        self.records_in += other.records_in;
        self.records_out += other.records_out;
        self.busy += other.busy;
        if let (Some(mine), Some(theirs)) = (&mut self.per_epoch, &other.per_epoch) {
            // Same bounds on both sides: cannot fail.
            let _ = mine.add(theirs);
        }
    }

    /// The figures of a span of `seconds` on `workers` workers.
    fn to_json(&self, seconds: f64, workers: usize) -> Value {
        let seconds = seconds.max(1e-3);
        let mut figures = json!({
            "records_in": self.records_in,
            "records_out": self.records_out,
            "rate_in": self.records_in as f64 / seconds,
            "rate_out": self.records_out as f64 / seconds,
            "busy_share": self.busy.as_secs_f64() / (seconds * workers.max(1) as f64),
            "seconds": seconds,
        });
        if let Some(per_epoch) = &self.per_epoch {
            figures["epochs"] = json!(per_epoch.len());
            figures["epoch_ms_mean"] = json!(per_epoch.mean() / 1000.0);
            figures["epoch_ms_p99"] = json!(per_epoch.value_at_quantile(0.99) as f64 / 1000.0);
        }
        figures
    }
}

/// Counts since the start and per bucket of the last 10 minutes.
struct Windowed {
    all: Counts,
    recent: VecDeque<(u64, Counts)>,
}

impl Windowed {
    fn new(operator: bool) -> Windowed {
        Windowed {
            all: Counts::new(operator),
            recent: VecDeque::new(),
        }
    }

    fn add(&mut self, bucket: u64, delta: &Counts) {
        self.all.add(delta);
        if self.recent.back().is_none_or(|(b, _)| *b != bucket) {
            self.recent
                .push_back((bucket, Counts::new(delta.per_epoch.is_some())));
            while self.recent.len() as u64 > BUCKETS {
                self.recent.pop_front();
            }
        }
        self.recent.back_mut().expect("pushed").1.add(delta);
    }

    /// The counts of the last `buckets` buckets up to `now` (all time if `None`).
    fn within(&self, now: u64, buckets: Option<u64>) -> Counts {
        let Some(buckets) = buckets else {
            return self.all.clone();
        };
        let mut sum = Counts::new(self.all.per_epoch.is_some());
        for (_, counts) in self.recent.iter().filter(|(b, _)| b + buckets > now) {
            sum.add(counts);
        }
        sum
    }
}

/// One worker's counts not yet handed to the process.
#[derive(Default)]
struct Pending {
    operators: HashMap<Node, Counts>,
    edges: HashMap<(Node, Node), Counts>,
}

impl Pending {
    fn operator(&mut self, name: Node) -> &mut Counts {
        self.operators
            .entry(name)
            .or_insert_with(|| Counts::new(true))
    }
}

/// The per-operator figures of this process's workers.
pub struct Operators {
    started: Instant,
    workers: usize,
    figures: Mutex<Figures>,
}

impl std::fmt::Debug for Operators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operators")
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Figures {
    operators: BTreeMap<Node, Windowed>,
    edges: BTreeMap<(Node, Node), Windowed>,
}

impl Operators {
    /// Figures for a process of `workers` workers.
    pub fn new(workers: usize) -> Operators {
        Operators {
            started: Instant::now(),
            workers,
            figures: Mutex::new(Figures::default()),
        }
    }

    /// Registers a logger on `worker` that counts for the next dataflow it
    /// builds, whose operators named in `named` are the nodes (and its
    /// inputs are [`SPOUTS`]). Call it just before building the topology;
    /// tell the returned [`Observer`] when epochs are written.
    pub fn observe(
        self: &Arc<Self>,
        worker: &mut Worker,
        named: &'static [&'static str],
    ) -> Observer {
        let log = Rc::new(RefCell::new(WorkerLog {
            operators: self.clone(),
            dataflow: worker.next_dataflow_index(),
            named,
            by_addr: HashMap::new(),
            nodes: HashMap::new(),
            names: Vec::new(),
            channels: HashMap::new(),
            routes: HashMap::new(),
            started: HashMap::new(),
            busy_in_epoch: HashMap::new(),
            pending: Pending::default(),
            handed_over: Instant::now(),
        }));
        let logger = log.clone();
        if let Some(mut register) = worker.log_register() {
            register.insert::<TimelyEventBuilder, _>("timely", move |_time, batch| {
                // Timely flushes its loggers when they drop, also while a
                // worker unwinds (a lost peer): count nothing then, since a
                // panic in a destructor aborts the process.
                if std::thread::panicking() {
                    return;
                }
                if let (Some(batch), Ok(mut log)) = (batch, logger.try_borrow_mut()) {
                    log.take(batch);
                }
            });
        }
        Observer(log)
    }

    fn hand_over(&self, pending: &mut Pending) {
        let bucket = self.bucket();
        // Figures are counts: a worker that panicked holding the lock left
        // them whole enough to go on counting.
        let mut figures = self.figures.lock().unwrap_or_else(|e| e.into_inner());
        for (name, delta) in &mut pending.operators {
            figures
                .operators
                .entry(name)
                .or_insert_with(|| Windowed::new(true))
                .add(bucket, delta);
            delta.clear();
        }
        for (edge, delta) in &mut pending.edges {
            figures
                .edges
                .entry(*edge)
                .or_insert_with(|| Windowed::new(false))
                .add(bucket, delta);
            delta.clear();
        }
    }

    fn bucket(&self) -> u64 {
        (self.started.elapsed().as_nanos() / BUCKET.as_nanos()) as u64
    }

    /// Each operator's figures per window, and each edge's:
    /// `{"operators": {NAME: {"1m": FIGURES, "10m": ..., "all": ...}},
    /// "edges": [{"from", "to", "stats": {...}}]}`. A window's `seconds` is
    /// how much of it has passed (less than its width early on); rates are
    /// per second, `busy_share` is busy time over the window's time on
    /// every worker of the process.
    pub fn to_json(&self) -> Value {
        let elapsed = self.started.elapsed();
        let now = self.bucket();
        // A window of n buckets spans the current one so far and n - 1 whole ones.
        let into_bucket = elapsed.as_secs_f64() - now as f64 * BUCKET.as_secs_f64();
        let seconds = |buckets: Option<u64>| match buckets {
            Some(n) => {
                (into_bucket + (n - 1) as f64 * BUCKET.as_secs_f64()).min(elapsed.as_secs_f64())
            }
            None => elapsed.as_secs_f64(),
        };
        let stats = |windowed: &Windowed| -> Value {
            WINDOWS
                .iter()
                .map(|(name, buckets)| {
                    let counts = windowed.within(now, *buckets);
                    (
                        name.to_string(),
                        counts.to_json(seconds(*buckets), self.workers),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let figures = self.figures.lock().expect("operator figures lock");
        let operators: serde_json::Map<String, Value> = figures
            .operators
            .iter()
            .map(|(name, windowed)| (name.to_string(), stats(windowed)))
            .collect();
        let edges: Vec<Value> = figures
            .edges
            .iter()
            .map(|((from, to), windowed)| json!({"from": from, "to": to, "stats": stats(windowed)}))
            .collect();
        json!({"operators": operators, "edges": edges})
    }
}

/// A worker's handle on its logger: tells it when epochs are written.
pub struct Observer(Rc<RefCell<WorkerLog>>);

impl Observer {
    /// The spouts read `records` records (good and bad) in `busy`: what
    /// the [`SPOUTS`] node counts in and its busy time (reading and
    /// decoding happen in the driver, outside the dataflow).
    pub fn spouts_read(&self, records: u64, busy: Duration) {
        let mut log = self.0.borrow_mut();
        *log.busy_in_epoch.entry(SPOUTS).or_default() += busy;
        let spouts = log.pending.operator(SPOUTS);
        spouts.records_in += records;
        spouts.busy += busy;
    }

    /// `epochs` more epochs are written on this worker: each named
    /// operator's busy time since the last call is shared among them as
    /// its time per epoch.
    pub fn epochs_written(&self, epochs: u64) {
        if epochs > 0 {
            self.0.borrow_mut().epochs_written(epochs);
        }
    }
}

/// A channel as created: in scope `scope`, from `(operator, port)` to `(operator, port)`.
struct Channel {
    scope: Vec<usize>,
    source: usize,
    target: usize,
}

/// What a channel's messages count for, once resolved.
#[derive(Clone, Default)]
struct Route {
    /// The named operator that sends on it.
    from: Option<Node>,
    /// The named operator that receives from it.
    to: Option<Node>,
    /// The named operators it joins (through unnamed ones), counted on
    /// the channel leaving `from`.
    edge: Option<(Node, Node)>,
}

struct WorkerLog {
    operators: Arc<Operators>,
    /// The index of the observed dataflow; others are ignored.
    dataflow: usize,
    named: &'static [&'static str],
    /// Every operator of the dataflow by address: its id.
    by_addr: HashMap<Vec<usize>, usize>,
    /// The node name of each operator id that is a node.
    nodes: HashMap<usize, Node>,
    /// The distinct nodes, in the order first seen.
    names: Vec<Node>,
    channels: HashMap<usize, Channel>,
    routes: HashMap<usize, Route>,
    /// When each node operator last started, by id.
    started: HashMap<usize, Duration>,
    /// Busy time of each node since the last epoch written.
    busy_in_epoch: HashMap<Node, Duration>,
    pending: Pending,
    handed_over: Instant,
}

impl WorkerLog {
    fn take(&mut self, batch: &[(Duration, TimelyEvent)]) {
        for (time, event) in batch {
            match event {
                TimelyEvent::Operates(op) if op.addr.first() == Some(&self.dataflow) => {
                    let node = if op.name == "Input" {
                        Some(SPOUTS)
                    } else {
                        self.named.iter().copied().find(|n| *n == op.name)
                    };
                    if let Some(node) = node {
                        self.nodes.insert(op.id, node);
                        if !self.names.contains(&node) {
                            self.names.push(node);
                        }
                        // Shown from the start, before it counts anything.
                        self.pending.operator(node);
                    }
                    self.by_addr.insert(op.addr.clone(), op.id);
                }
                TimelyEvent::Channels(channel)
                    if channel.scope_addr.first() == Some(&self.dataflow) =>
                {
                    self.channels.insert(
                        channel.id,
                        Channel {
                            scope: channel.scope_addr.clone(),
                            source: channel.source.0,
                            target: channel.target.0,
                        },
                    );
                }
                TimelyEvent::Messages(message) if self.channels.contains_key(&message.channel) => {
                    let route = self.route(message.channel);
                    let records = message.record_count.max(0) as u64;
                    if message.is_send {
                        if let Some(from) = &route.from {
                            self.pending.operator(from).records_out += records;
                        }
                        if let Some(edge) = route.edge {
                            self.pending
                                .edges
                                .entry(edge)
                                .or_insert_with(|| Counts::new(false))
                                .records_out += records;
                        }
                    } else if let Some(to) = &route.to {
                        self.pending.operator(to).records_in += records;
                    }
                }
                TimelyEvent::Schedule(schedule) if self.nodes.contains_key(&schedule.id) => {
                    match schedule.start_stop {
                        StartStop::Start => {
                            self.started.insert(schedule.id, *time);
                        }
                        StartStop::Stop => {
                            if let Some(start) = self.started.remove(&schedule.id) {
                                let busy = time.saturating_sub(start);
                                let name = &self.nodes[&schedule.id];
                                *self.busy_in_epoch.entry(name).or_default() += busy;
                                self.pending.operator(name).busy += busy;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if self.handed_over.elapsed() >= HAND_OVER {
            self.hand_over();
        }
    }

    fn epochs_written(&mut self, epochs: u64) {
        for &name in &self.names {
            let busy = self.busy_in_epoch.remove(name).unwrap_or_default();
            let micros = (busy.as_micros() as u64 / epochs).min(3_600_000_000);
            if let Some(per_epoch) = &mut self.pending.operator(name).per_epoch {
                let _ = per_epoch.record_n(micros, epochs as u32);
            }
        }
        if self.handed_over.elapsed() >= HAND_OVER {
            self.hand_over();
        }
    }

    fn hand_over(&mut self) {
        self.handed_over = Instant::now();
        self.operators.hand_over(&mut self.pending);
    }

    /// The route of `channel`, resolved the first time it carries a message
    /// (by then the dataflow is built).
    fn route(&mut self, channel: usize) -> Route {
        if let Some(route) = self.routes.get(&channel) {
            return route.clone();
        }
        let route = self.resolve(channel);
        self.routes.insert(channel, route.clone());
        route
    }

    fn node_at(&self, scope: &[usize], index: usize) -> Option<(Vec<usize>, Option<Node>)> {
        let mut addr = scope.to_vec();
        addr.push(index);
        let id = self.by_addr.get(&addr)?;
        let node = self.nodes.get(id).copied();
        Some((addr, node))
    }

    fn resolve(&self, channel: usize) -> Route {
        let c = &self.channels[&channel];
        let from = self.node_at(&c.scope, c.source).and_then(|(_, n)| n);
        let to = self.node_at(&c.scope, c.target).and_then(|(_, n)| n);
        let edge = from.and_then(|from| {
            let reached = self.named_downstream(channel);
            (reached.len() == 1).then(|| (from, reached.into_iter().next().expect("one")))
        });
        Route { from, to, edge }
    }

    /// The named operators that `channel`'s records reach first, passing
    /// through unnamed operators.
    fn named_downstream(&self, channel: usize) -> HashSet<Node> {
        let mut reached = HashSet::new();
        let mut seen = HashSet::new();
        let mut todo = vec![channel];
        while let Some(channel) = todo.pop() {
            if !seen.insert(channel) {
                continue;
            }
            let c = &self.channels[&channel];
            match self.node_at(&c.scope, c.target) {
                Some((_, Some(node))) => {
                    reached.insert(node);
                }
                Some((_, None)) => todo.extend(
                    self.channels
                        .iter()
                        .filter(|(_, next)| next.scope == c.scope && next.source == c.target)
                        .map(|(id, _)| *id),
                ),
                None => {}
            }
        }
        reached
    }
}
