#!/usr/bin/env bash
# End-to-end rate from Kafka, beside the same workload from a JSONL file in
# the same run (the ratio is the figure to quote: these machines are shared).
#   scripts/kafka-bench.sh [FOLLOWS] [EVENTS]
# Needs the servers (scripts/servers.sh start): Tansu on 127.0.0.1:9092.
set -euo pipefail
cd "$(dirname "$0")/.."
FOLLOWS="${1:-100000}"
EVENTS="${2:-100000}"
WORKERS=2
BROKERS=127.0.0.1:9092
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q
BIN=target/release/feedstorm
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
WORKLOAD=(--users 5000 --listings 2500 --follows "$FOLLOWS" --events "$EVENTS")
TOTAL=$((FOLLOWS + EVENTS))
TOPIC="bench-$$"

tansu topic create "$TOPIC" --broker "tcp://$BROKERS" --partitions 8 >/dev/null
echo "== produce $TOTAL events into $TOPIC (8 partitions)"
"$BIN" produce --quiet --brokers "$BROKERS" --topic "$TOPIC" --generate "${WORKLOAD[@]}"
"$BIN" generate --out "$WORK/events.jsonl" "${WORKLOAD[@]}"

# Runs a topology until it has read TOTAL events and caught up; prints
# "seconds deliveries".
run() {
  local topology="$1" port=7391
  "$BIN" run "$topology" --listen "127.0.0.1:$port" --workers "$WORKERS" >"$WORK/run.log" 2>&1 &
  local pid=$! start
  start=$(date +%s.%N)
  while :; do
    local status
    status=$(curl -sf "http://127.0.0.1:$port/status" || true)
    if [[ "$status" == *"\"caught_up\":true"* && "$status" == *"\"events_in\":$TOTAL,"* ]]; then
      local end deliveries
      end=$(date +%s.%N)
      deliveries=$(sed -E 's/.*"feed_deliveries":([0-9]+).*/\1/' <<<"$status")
      kill "$pid"; wait "$pid" 2>/dev/null || true
      echo "$(awk "BEGIN{print $end - $start}") $deliveries"
      return
    fi
    sleep 0.05
  done
}

cat >"$WORK/kafka.toml" <<EOF
name = "bench-kafka"
[[spout]]
type = "kafka"
brokers = "$BROKERS"
topics = ["$TOPIC"]
group_id = "$TOPIC"
[input]
epoch_events = 10000
[dead_letter]
path = "$WORK/dead.jsonl"
EOF
cat >"$WORK/file.toml" <<EOF
name = "bench-file"
[[spout]]
type = "file"
path = "$WORK/events.jsonl"
[input]
epoch_events = 10000
[dead_letter]
path = "$WORK/dead.jsonl"
EOF

read -r kafka_s kafka_d < <(run "$WORK/kafka.toml")
read -r file_s file_d < <(run "$WORK/file.toml")
printf '== %d events, %d workers (times include start-up)\n' "$TOTAL" "$WORKERS"
awk -v t="$TOTAL" -v ks="$kafka_s" -v kd="$kafka_d" -v fs="$file_s" -v fd="$file_d" 'BEGIN {
  printf "kafka: %.2f s, %.0f events/s, %.0f feed deliveries/s\n", ks, t / ks, kd / ks
  printf "file:  %.2f s, %.0f events/s, %.0f feed deliveries/s\n", fs, t / fs, fd / fs
  printf "kafka / file events/s: %.2f\n", fs / ks
}'
