//! The worker cluster: one topology over several processes, on timely's own
//! multi-process communication (`CommunicationConfig::Cluster`).
//!
//! Every process runs the same `feedstorm run` with the same workers per
//! process; worker `w` of process `p` is global worker `p * workers + w`,
//! and a user belongs to the worker [`grouping::route`](crate::grouping::route)
//! picks among all of them, so to exactly one process.
//!
//! - [`hello`]: at start the processes exchange who they are (HTTP
//!   address, proposed run, checkpoints complete on each) and agree on the
//!   run and the checkpoint to resume from.
//! - [`control`]: while running, a durable checkpoint counts once every
//!   process has it (a timely probe takes the minimum), and a stop asked
//!   of any process stops every process at one agreed epoch.
//! - A lost process ends the cluster: timely's network threads panic on a
//!   broken connection; [`watch_for_lost_peers`] turns that into a message
//!   naming the peer, which `feedstorm run` exits with (non-zero).

pub mod control;
pub mod hello;

use std::path::Path;
use std::sync::OnceLock;

use crate::config::ClusterConfig;
use crate::error::{Error, Result};
use crate::event::TypedId;
use crate::grouping::route;

/// This process's place in the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// Processes in the cluster.
    pub processes: usize,
    /// This process, from 0.
    pub process: usize,
    /// Worker threads in each process.
    pub workers: usize,
    /// Each process's `host:port` for timely's traffic (empty for one process).
    pub addresses: Vec<String>,
}

impl Cluster {
    /// A cluster of one process with `workers` threads.
    ///
    /// ```
    /// let one = feedstorm::cluster::Cluster::single(2);
    /// assert_eq!((one.peers(), one.first_worker()), (2, 0));
    /// ```
    pub fn single(workers: usize) -> Cluster {
        Cluster {
            processes: 1,
            process: 0,
            workers: workers.max(1),
            addresses: Vec::new(),
        }
    }

    /// Process `config.process` of a cluster whose addresses are in the
    /// hosts file `config.hosts`.
    pub fn from_config(config: &ClusterConfig, workers: usize) -> Result<Cluster> {
        let addresses = read_hosts(&config.hosts)?;
        Cluster::new(config.processes, config.process, workers, addresses)
    }

    /// Process `process` of `processes`, checked against the addresses.
    pub fn new(
        processes: usize,
        process: usize,
        workers: usize,
        addresses: Vec<String>,
    ) -> Result<Cluster> {
        let setting = |setting, message: String| Error::Setting { setting, message };
        if processes == 0 {
            return Err(setting("processes", "must be at least 1".into()));
        }
        if process >= processes {
            return Err(setting(
                "process",
                format!("{process} is not below processes = {processes} (processes count from 0)"),
            ));
        }
        if processes > 1 && addresses.len() < processes {
            return Err(setting(
                "hosts",
                format!(
                    "{} addresses for {processes} processes (one host:port a line)",
                    addresses.len()
                ),
            ));
        }
        Ok(Cluster {
            processes,
            process,
            workers: workers.max(1),
            addresses: addresses.into_iter().take(processes).collect(),
        })
    }

    /// Workers in the whole cluster.
    pub fn peers(&self) -> usize {
        self.processes * self.workers
    }

    /// The global index of this process's first worker.
    pub fn first_worker(&self) -> usize {
        self.process * self.workers
    }

    /// The process of global worker `worker`.
    pub fn process_of_worker(&self, worker: usize) -> usize {
        worker / self.workers
    }

    /// The process that owns `user`'s feeds (the same choice as the
    /// dataflow's exchange by user).
    ///
    /// ```
    /// use feedstorm::cluster::Cluster;
    /// let cluster = Cluster::new(2, 0, 2, vec!["a:1".into(), "b:1".into()]).unwrap();
    /// let user = feedstorm::event::TypedId::parse("user:rob").unwrap();
    /// assert!(cluster.owner_of(&user) < 2);
    /// ```
    pub fn owner_of(&self, user: &TypedId) -> usize {
        self.process_of_worker((route(user) % self.peers() as u64) as usize)
    }

    /// Whether this is a cluster of more than one process.
    pub fn is_distributed(&self) -> bool {
        self.processes > 1
    }

    /// Timely's communication settings for this process.
    pub fn communication(&self) -> timely::CommunicationConfig {
        if self.is_distributed() {
            timely::CommunicationConfig::Cluster {
                threads: self.workers,
                process: self.process,
                addresses: self.addresses.clone(),
                report: false,
                zerocopy: false,
            }
        } else {
            timely::CommunicationConfig::Process(self.workers)
        }
    }
}

/// Reads timely's hosts file: one `host:port` a line; blank lines and
/// `#` comments are skipped.
pub fn read_hosts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

static LOST_PEER: OnceLock<String> = OnceLock::new();

/// Watches timely's network threads: when one panics (a peer process died
/// or its connection broke), records which peer was lost; the panic is
/// still reported as before.
pub fn watch_for_lost_peers(cluster: &Cluster) {
    if !cluster.is_distributed() {
        return;
    }
    let addresses = cluster.addresses.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let peer = thread
            .name()
            .and_then(|name| {
                name.strip_prefix("timely:recv-")
                    .or_else(|| name.strip_prefix("timely:send-"))
            })
            .and_then(|index| index.parse::<usize>().ok());
        match peer {
            Some(peer) if LOST_PEER.get().is_none() => {
                let address = addresses.get(peer).map_or("?", String::as_str);
                let cause = info
                    .payload()
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| info.payload().downcast_ref::<&str>().copied())
                    .unwrap_or("connection failed");
                let _ = LOST_PEER.set(format!(
                    "lost peer process {peer} ({address}): {cause}; the cluster stops \
                     (restart every process: they resume from the newest checkpoint)"
                ));
                tracing::error!(peer, address, cause, "lost a peer process");
            }
            Some(_) => {}
            // The workers fail next on the closed channels: that is the same loss.
            None if LOST_PEER.get().is_some() => {}
            None => previous(info),
        }
    }));
}

/// The lost peer, once one was (see [`watch_for_lost_peers`]).
pub fn lost_peer() -> Option<&'static str> {
    LOST_PEER.get().map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_of_a_user_is_the_process_of_its_worker() {
        let cluster =
            Cluster::new(3, 1, 2, vec!["a:1".into(), "b:1".into(), "c:1".into()]).expect("valid");
        for name in ["user:a", "user:b", "user:c", "user:d", "user:e"] {
            let user = TypedId::parse(name).expect("typed");
            let worker = (route(&user) % 6) as usize;
            assert_eq!(cluster.owner_of(&user), worker / 2);
        }
    }

    #[test]
    fn a_cluster_needs_an_address_per_process() {
        assert!(Cluster::new(2, 0, 1, vec!["a:1".into()]).is_err());
        assert!(Cluster::new(2, 2, 1, vec!["a:1".into(), "b:1".into()]).is_err());
        assert!(Cluster::new(1, 0, 1, Vec::new()).is_ok());
    }
}
