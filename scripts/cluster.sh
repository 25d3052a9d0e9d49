#!/usr/bin/env bash
# A worker cluster on this machine, for trying it: N `feedstorm run`
# processes on 127.0.0.1 sharing one hosts file (timely's traffic on ports
# 2101.., the HTTP API of process I on 7070+I).
#
#   scripts/cluster.sh start N [TOPOLOGY] [WORKERS]   default topologies/demo.toml, 1 worker each
#   scripts/cluster.sh stop                           SIGTERM to process 0: the whole cluster
#                                                     halts at one epoch, checkpoints and exits
#   scripts/cluster.sh bench [EVENTS]                 throughput of 1x2, 2x1 and 2x2 on one
#                                                     generated file, as ratios of one run
set -euo pipefail
cd "$(dirname "$0")/.."
state=.run/cluster
bin=target/release/feedstorm
mkdir -p "$state"
[ -x "$bin" ] || cargo build --release --locked

hosts() { # hosts N: a hosts file of N loopback ports
  : > "$state/hosts.txt"
  for ((i = 0; i < $1; i++)); do echo "127.0.0.1:$((2101 + i))" >> "$state/hosts.txt"; done
}

launch() { # launch N WORKERS TOPOLOGY [EXTRA...]
  local n=$1 workers=$2 topology=$3; shift 3
  hosts "$n"
  for ((i = 0; i < n; i++)); do
    local cluster=()
    [ "$n" -gt 1 ] && cluster=(--processes "$n" --process "$i" --hosts "$state/hosts.txt")
    "$bin" run "$topology" --workers "$workers" --listen "127.0.0.1:$((7070 + i))" \
      "${cluster[@]}" "$@" > "$state/p$i.out" 2> "$state/p$i.log" &
    echo $! > "$state/p$i.pid"
  done
}

stop_all() {
  local pid
  [ -f "$state/p0.pid" ] && kill -TERM "$(cat "$state/p0.pid")" 2>/dev/null || true
  for file in "$state"/p*.pid; do
    [ -f "$file" ] || continue
    pid=$(cat "$file")
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$file"
  done
}

caught_up() { # caught_up N EVENTS: every process caught up, EVENTS read in all
  local n=$1 events=$2 sum=0 s
  for ((i = 0; i < n; i++)); do
    s=$(curl -sf "http://127.0.0.1:$((7070 + i))/status") || return 1
    grep -q '"caught_up":true' <<< "$s" || return 1
    sum=$((sum + $(sed -E 's/.*"events_in":([0-9]+).*/\1/' <<< "$s")))
  done
  [ "$sum" -ge "$events" ]
}

case "${1:-}" in
  start)
    n=${2:?usage: cluster.sh start N [TOPOLOGY] [WORKERS]}
    stop_all
    launch "$n" "${4:-1}" "${3:-topologies/demo.toml}"
    echo "started $n processes; logs in $state/p*.log; try: curl http://127.0.0.1:7070/status"
    ;;
  stop)
    stop_all
    echo "stopped"
    ;;
  bench)
    events=${2:-100000}
    file=$state/bench.jsonl
    "$bin" generate --out "$file" --users 3000 --listings 1500 --follows 100000 --events "$events"
    lines=$(wc -l < "$file")
    cat > "$state/bench.toml" <<TOML
name = "cluster-bench"
[[spout]]
type = "file"
path = "$PWD/$file"
[checkpoint]
interval = "0s"
[dead_letter]
path = "$PWD/$state/bench-dead.jsonl"
TOML
    declare -A took
    for shape in 1x2 2x1 2x2; do
      n=${shape%x*} workers=${shape#*x}
      start=$(date +%s.%N)
      launch "$n" "$workers" "$state/bench.toml"
      until caught_up "$n" "$lines"; do sleep 0.05; done
      took[$shape]=$(echo "$(date +%s.%N) - $start" | bc)
      stop_all
      printf '%s: %d events in %.2f s (%.0f events/s)\n' "$shape" "$lines" "${took[$shape]}" \
        "$(echo "$lines / ${took[$shape]}" | bc -l)"
    done
    for shape in 2x1 2x2; do
      printf 'throughput %s / 1x2: %.2f\n' "$shape" "$(echo "${took[1x2]} / ${took[$shape]}" | bc -l)"
    done
    ;;
  *)
    sed -n '2,11p' "$0"
    exit 2
    ;;
esac
