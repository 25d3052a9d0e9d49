//! Every shipped topology and process config loads (a typo in one would
//! otherwise surface only when a user runs it).

use feedstorm::config::{ProcessConfig, TopologyConfig};

fn files(dir: &str) -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut found: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    found.sort();
    found
}

#[test]
fn every_shipped_topology_and_config_loads() {
    let topologies = files("topologies");
    assert!(topologies.len() >= 3, "{topologies:?}");
    for path in topologies {
        let topology = TopologyConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        topology
            .validate()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    for path in files("config") {
        ProcessConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    }
}
