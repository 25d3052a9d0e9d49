#!/usr/bin/env bash
# The whole test suite, from a fresh clone: format, lints, then every test.
# .ci/run calls exactly this. The real servers the tests use (redis-server)
# are installed if missing and started on 127.0.0.1 by scripts/servers.sh,
# and stopped again at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install the Rust toolchain (rustup, Rust >= 1.88) first" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets --all-features -- -D warnings"
cargo clippy --release --workspace --all-targets --all-features --locked -- -D warnings
echo "== cargo doc (warnings denied: broken links fail)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --locked
echo "== chromium (the topology page's test loads /ui in it)"
if ! command -v chromium >/dev/null; then
  echo "installing chromium (Debian package; first run only, about a minute)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
echo "== servers"
bash scripts/servers.sh start
trap 'bash scripts/servers.sh stop' EXIT
export FEEDSTORM_REDIS_URL="redis://127.0.0.1:${FEEDSTORM_REDIS_PORT:-6390}"
echo "== cargo test"
cargo test --release --locked --workspace --all-features --all-targets
cargo test --release --locked --workspace --all-features --doc
