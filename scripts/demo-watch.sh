#!/usr/bin/env bash
# Watches the demo topology for a while, as the README's demo figures were
# measured: every INTERVAL seconds for MINUTES minutes it prints the seconds
# since the start, `caught_up`, `lag_total` (events available and not yet
# read), events read, the RSS in MiB, the cores used since the last sample,
# and how long one `POST /drpc/rebuild-feed` took (ms).
#
#   scripts/demo-watch.sh [MINUTES] [INTERVAL] > curve.txt
#
# Needs a release build (`cargo build --release`) and port 7070 free.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
interval=${2:-10}
./target/release/feedstorm run topologies/demo.toml > target/demo-watch.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null' EXIT
start=$(date +%s)
until curl -sf http://127.0.0.1:7070/status >/dev/null; do sleep 0.2; done
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
echo "t_s caught_up lag_total events_in rss_mib cores rebuild_ms"
before=$(ticks)
for i in $(seq 1 $(( minutes * 60 / interval ))); do
  sleep "$interval"
  now=$(ticks)
  cores=$(python3 -c "print(round(($now - $before) / $hz / $interval, 2))")
  before=$now
  status=$(curl -s http://127.0.0.1:7070/status)
  fields=$(echo "$status" | python3 -c 'import json, sys; s = json.load(sys.stdin); print(s["caught_up"], s["lag_total"], s["events_in"])')
  rss=$(( $(awk '/VmRSS/{print $2}' "/proc/$pid/status") / 1024 ))
  seconds=$(curl -s -o /dev/null -w '%{time_total}' -X POST \
    -H 'content-type: application/json' -d "{\"user\":\"user:u$(( i % 2000 ))\"}" \
    http://127.0.0.1:7070/drpc/rebuild-feed)
  ms=$(python3 -c "print(round($seconds * 1000, 1))")
  echo "$(( $(date +%s) - start )) $fields $rss $cores $ms"
done
