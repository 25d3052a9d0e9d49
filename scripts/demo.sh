#!/usr/bin/env bash
# Runs the demo topology: a generated social graph and activity stream into
# the embedded store, served on http://127.0.0.1:7070 (no Kafka, no Redis).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install the Rust toolchain (rustup, Rust >= 1.88) first" >&2
  exit 1
fi
exec cargo run --release --locked -- run topologies/demo.toml "$@"
