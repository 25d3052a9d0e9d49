#!/usr/bin/env bash
# Installs (if missing) and starts the real servers the tests use, on
# 127.0.0.1 only, and stops them by PID.
#   scripts/servers.sh start   # redis-server on 127.0.0.1:${FEEDSTORM_REDIS_PORT:-6390}
#   scripts/servers.sh stop
# State lives under .run/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="$PWD/.run"
REDIS_PORT="${FEEDSTORM_REDIS_PORT:-6390}"
mkdir -p "$RUN"

install_redis() {
  if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then return; fi
  echo "installing redis-server (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq redis-server >/dev/null
}

start_redis() {
  if [ -f "$RUN/redis.pid" ] && kill -0 "$(cat "$RUN/redis.pid")" 2>/dev/null; then return; fi
  mkdir -p "$RUN/redis"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$RUN/redis" --save "" --appendonly no \
    --daemonize yes --pidfile "$RUN/redis.pid" --logfile "$RUN/redis.log"
  for _ in $(seq 1 100); do
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "redis-server did not start; see $RUN/redis.log" >&2
  exit 1
}

stop_pid() {
  local file="$1"
  if [ -f "$file" ]; then
    kill "$(cat "$file")" 2>/dev/null || true
    rm -f "$file"
  fi
}

case "${1:-start}" in
  start)
    install_redis
    start_redis
    echo "redis: redis://127.0.0.1:$REDIS_PORT"
    ;;
  stop)
    stop_pid "$RUN/redis.pid"
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
