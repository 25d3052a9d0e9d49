//! The Redis servers that scripts/servers.sh starts, and plain clients for
//! them (the redis crate's own, cluster client included), independent of the
//! store under test. A test that cannot reach its server fails: it does not skip.

use std::path::PathBuf;

use feedstorm::config::RedisSinkConfig;
use redis::Commands;

/// A Redis to test against.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: &'static str,
    pub url: String,
    pub cluster: bool,
    pub ca: Option<PathBuf>,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

/// The single server (FEEDSTORM_REDIS_URL, default redis://127.0.0.1:6390).
pub fn single() -> Target {
    Target {
        name: "single",
        url: env_or("FEEDSTORM_REDIS_URL", "redis://127.0.0.1:6390"),
        cluster: false,
        ca: None,
    }
}

/// The 3-master cluster (FEEDSTORM_REDIS_CLUSTER_URL, one of its nodes,
/// default redis://127.0.0.1:6391).
pub fn cluster() -> Target {
    Target {
        name: "cluster",
        url: env_or("FEEDSTORM_REDIS_CLUSTER_URL", "redis://127.0.0.1:6391"),
        cluster: true,
        ca: None,
    }
}

/// The server with TLS and a password (FEEDSTORM_REDIS_TLS_URL and
/// FEEDSTORM_REDIS_TLS_CA, defaults as scripts/servers.sh starts it).
pub fn tls() -> Target {
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/.run/tls/ca.crt");
    Target {
        name: "tls",
        url: env_or(
            "FEEDSTORM_REDIS_TLS_URL",
            "rediss://:feedstorm-test@127.0.0.1:6394",
        ),
        cluster: false,
        ca: Some(env_or("FEEDSTORM_REDIS_TLS_CA", ca).into()),
    }
}

/// A plain connection to one node.
fn node(url: &str, ca: &Option<PathBuf>) -> redis::Connection {
    let client = match ca {
        Some(ca) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(ca).expect("the test CA (scripts/servers.sh start)")),
            },
        ),
        None => redis::Client::open(url),
    }
    .unwrap();
    client.get_connection().unwrap_or_else(|e| {
        panic!("redis at {url} is not reachable (run scripts/servers.sh start): {e}")
    })
}

impl Target {
    /// The sink settings for this server, keys under `prefix`.
    pub fn sink(&self, prefix: &str) -> RedisSinkConfig {
        let mut sink = RedisSinkConfig::new(&self.url, prefix);
        sink.cluster = self.cluster;
        sink.tls_ca_file = self.ca.clone();
        sink
    }

    /// Runs `f` with a client that reaches every key: a plain connection,
    /// or the redis crate's cluster connection.
    pub fn with<T>(&self, f: impl FnOnce(&mut dyn redis::ConnectionLike) -> T) -> T {
        if self.cluster {
            let client = redis::cluster::ClusterClient::new(vec![self.url.as_str()]).unwrap();
            f(&mut client.get_connection().expect("the cluster is reachable"))
        } else {
            f(&mut node(&self.url, &self.ca))
        }
    }

    /// A plain connection to each master.
    fn masters(&self) -> Vec<redis::Connection> {
        let mut seed = node(&self.url, &self.ca);
        if !self.cluster {
            return vec![seed];
        }
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut seed).unwrap();
        nodes
            .lines()
            .filter(|line| line.split(' ').nth(2).is_some_and(|f| f.contains("master")))
            .map(|line| {
                let addr = line.split(' ').nth(1).unwrap().split('@').next().unwrap();
                node(&format!("redis://{addr}"), &self.ca)
            })
            .collect()
    }

    /// Every key matching `pattern`, on every master.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys = Vec::new();
        for mut c in self.masters() {
            let found: Vec<String> = c
                .scan_match(pattern)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            keys.extend(found);
        }
        keys
    }

    /// A key prefix of the test's own, cleared first.
    pub fn prefix(&self, name: &str) -> String {
        let prefix = format!("test-{name}-{}-{}", self.name, std::process::id());
        for mut c in self.masters() {
            let keys: Vec<String> = c
                .scan_match(format!("{prefix}:*"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for key in keys {
                let _: () = c.del(key).unwrap();
            }
        }
        prefix
    }
}
