#!/usr/bin/env bash
# The whole test suite, from a fresh clone: format, lints, then every test.
# .ci/run calls exactly this. Servers that later tests need are installed and
# started here by scripts/servers.sh (none are needed yet).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install the Rust toolchain (rustup, Rust >= 1.88) first" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --release --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --release --locked --all-targets
cargo test --release --locked --doc
