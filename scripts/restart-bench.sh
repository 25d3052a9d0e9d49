#!/usr/bin/env bash
# A restart as operations see it, beside `feedstorm bench --restart`: every
# start is a new `feedstorm run` process, and the restart follows a SIGKILL.
# In one run: a full replay of HISTORY + NEW events in a new process, then
# the history alone with checkpoints (1 s), killed once a checkpoint holds
# all of it, then NEW events appended and a new process started from the
# checkpoint (default interval). Both times run from exec to `caught_up`.
#
#   scripts/restart-bench.sh [FOLLOWS] [EVENTS] [NEW]
#
# The bench's figure runs in one process, whose restart reuses the pages the
# run before freed; a new process touches fresh ones (see the README).
set -euo pipefail
cd "$(dirname "$0")/.."
FOLLOWS="${1:-200000}"
EVENTS="${2:-800000}"
NEW="${3:-10000}"
PORT=7392
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q
BIN="$PWD/target/release/feedstorm"
WORK="$(mktemp -d)"
pid=
trap '[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null; rm -rf "$WORK"' EXIT
WORKLOAD=(--users 3000 --listings 1500 --follows "$FOLLOWS")
HISTORY=$((FOLLOWS + EVENTS))
"$BIN" generate --out "$WORK/all.jsonl" "${WORKLOAD[@]}" --events $((EVENTS + NEW)) >/dev/null
head -n "$HISTORY" "$WORK/all.jsonl" > "$WORK/history.jsonl"

# topology INTERVAL: the bench's topology (flat feeds, embedded store).
topology() {
  cat <<EOF
name = "restart"
digest = []
[[spout]]
type = "file"
path = "$WORK/events.jsonl"
follow = true
[notifications]
enabled = false
[dead_letter]
path = "$WORK/dead-letters.jsonl"
[checkpoint]
dir = "$WORK/checkpoints"
interval = "$1"
EOF
}

# wait_for EVENTS START [checkpoint]: polls /status (one python process, not
# a curl per poll, which would take a core from the run) until EVENTS are
# read and caught up, and with `checkpoint` until a checkpoint taken after
# that is durable; prints the seconds from START (Unix time) to caught up.
wait_for() {
  python3 - "$1" "$2" "$PORT" "${3:-}" <<'EOF'
import json, sys, time, urllib.request
need, start, port, checkpoint = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
caught_up = None  # the seconds to caught up, and the uptime (ms) then
while True:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=1) as r:
            s = json.load(r)
        if caught_up is None and s.get("caught_up") and s.get("events_in", 0) >= need:
            caught_up = (time.time() - start, s["uptime_seconds"] * 1000)
        last = ((s.get("checkpoint") or {}).get("last") or {}).get("epoch", -1)
        if caught_up and (not checkpoint or last > caught_up[1]):
            print(f"{caught_up[0]:.3f}")
            break
    except OSError:
        pass
    time.sleep(0.005)
EOF
}

start() {
  "$BIN" run "$1" --listen "127.0.0.1:$PORT" --workers 2 >>"$WORK/run.log" 2>&1 &
  pid=$!
}

stop() { kill -9 "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

echo "== full replay: $((HISTORY + NEW)) events in a new process"
topology 0s > "$WORK/full.toml"
cp "$WORK/all.jsonl" "$WORK/events.jsonl"
t0=$(date +%s.%N); start "$WORK/full.toml"
full=$(wait_for $((HISTORY + NEW)) "$t0"); stop

echo "== history with checkpoints, then SIGKILL"
topology 1s > "$WORK/history.toml"
cp "$WORK/history.jsonl" "$WORK/events.jsonl"
start "$WORK/history.toml"
wait_for "$HISTORY" 0 checkpoint >/dev/null
stop

echo "== restart from the checkpoint, $NEW new events"
tail -n "+$((HISTORY + 1))" "$WORK/all.jsonl" >> "$WORK/events.jsonl"
topology 30s > "$WORK/restart.toml"
t0=$(date +%s.%N); start "$WORK/restart.toml"
restart=$(wait_for "$NEW" "$t0"); stop

python3 -c "print(f'full replay {$full:.2f} s, restart {$restart:.2f} s: full replay / restart {$full / $restart:.1f}x')"
