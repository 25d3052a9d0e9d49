#!/usr/bin/env bash
# Installs (if missing) and starts the real servers the tests use, on
# 127.0.0.1 only, and stops them by PID.
#   scripts/servers.sh start   # redis-server on 127.0.0.1:${FEEDSTORM_REDIS_PORT:-6390},
#                              # a 3-master Redis Cluster on 127.0.0.1:6391-6393,
#                              # redis-server with TLS and a password on 127.0.0.1:6394,
#                              # and Tansu (a Kafka-protocol broker, SQLite storage) on 127.0.0.1:9092
#   scripts/servers.sh stop
# State lives under .run/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="$PWD/.run"
REDIS_PORT="${FEEDSTORM_REDIS_PORT:-6390}"
CLUSTER_PORTS=(6391 6392 6393)
TLS_PORT=6394
TLS_PASSWORD=feedstorm-test
KAFKA_PORT="${FEEDSTORM_KAFKA_PORT:-9092}"
TANSU_VERSION=0.6.0
mkdir -p "$RUN"

# Whether the process whose PID is in file $1 runs.
running() {
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_redis() {
  if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then return; fi
  echo "installing redis-server (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq redis-server >/dev/null
}

start_redis() {
  if running "$RUN/redis.pid"; then return; fi
  mkdir -p "$RUN/redis"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$RUN/redis" --save "" --appendonly no \
    --daemonize yes --pidfile "$RUN/redis.pid" --logfile "$RUN/redis.log"
  wait_ping "$REDIS_PORT"
}

# Tansu is on crates.io only as source: the first install builds it (about
# 24 minutes on 2 cores); later runs find it on PATH and skip this.
install_tansu() {
  export PATH="$HOME/.cargo/bin:$PATH"
  if command -v tansu >/dev/null; then return; fi
  echo "installing tansu $TANSU_VERSION with cargo (first run only: about 24 minutes on 2 cores)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features libsql
}

# confluent-kafka (the Python client, its wheel bundles librdkafka): a Kafka
# client independent of feedstorm's, for the tests. Into .run/pylib.
install_python_kafka() {
  if PYTHONPATH="$RUN/pylib" python3 -c "import confluent_kafka" 2>/dev/null; then return; fi
  echo "installing confluent-kafka (PyPI) into $RUN/pylib"
  python3 -m pip install --quiet --disable-pip-version-check --target "$RUN/pylib" confluent-kafka
}

# SQLite storage: the memory engine loses and re-delivers messages. The
# database path is relative to the working directory, hence the cd.
start_tansu() {
  if running "$RUN/tansu.pid"; then return; fi
  rm -rf "$RUN/tansu"
  mkdir -p "$RUN/tansu"
  (cd "$RUN/tansu" && exec tansu broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" --storage-engine sqlite://tansu.db \
    >"$RUN/tansu.log" 2>&1) &
  echo $! >"$RUN/tansu.pid"
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null && return
    sleep 0.1
  done
  echo "tansu did not start; see $RUN/tansu.log" >&2
  exit 1
}

wait_ping() {
  local port="$1"; shift
  for _ in $(seq 1 100); do
    redis-cli -h 127.0.0.1 -p "$port" "$@" ping >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "redis-server on port $port did not start; see $RUN/*.log" >&2
  exit 1
}

# Three masters, no replicas: the slots spread over three nodes.
start_cluster() {
  local port nodes=()
  for port in "${CLUSTER_PORTS[@]}"; do
    nodes+=("127.0.0.1:$port")
    if running "$RUN/cluster-$port.pid"; then continue; fi
    rm -rf "$RUN/cluster/$port"
    mkdir -p "$RUN/cluster/$port"
    redis-server --bind 127.0.0.1 --port "$port" --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-node-timeout 5000 --dir "$RUN/cluster/$port" --save "" --appendonly no \
      --daemonize yes --pidfile "$RUN/cluster-$port.pid" --logfile "$RUN/cluster-$port.log"
  done
  for port in "${CLUSTER_PORTS[@]}"; do wait_ping "$port"; done
  if ! redis-cli -p "${CLUSTER_PORTS[0]}" cluster info | grep -q "cluster_state:ok"; then
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$RUN/cluster-create.log"
  fi
  for port in "${CLUSTER_PORTS[@]}"; do
    for _ in $(seq 1 100); do
      redis-cli -p "$port" cluster info | grep -q "cluster_state:ok" && break
      sleep 0.1
    done
    redis-cli -p "$port" cluster info | grep -q "cluster_state:ok" \
      || { echo "the cluster did not form; see $RUN/cluster-create.log" >&2; exit 1; }
  done
}

# A test certificate authority and a server certificate for 127.0.0.1.
make_certs() {
  local dir="$RUN/tls"
  [ -f "$dir/server.crt" ] && return
  mkdir -p "$dir"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=feedstorm test CA" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$dir/san.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 3650 -extfile "$dir/san.ext" -out "$dir/server.crt" 2>/dev/null
}

start_tls() {
  if running "$RUN/redis-tls.pid"; then return; fi
  make_certs
  mkdir -p "$RUN/redis-tls"
  redis-server --bind 127.0.0.1 --port 0 --tls-port "$TLS_PORT" --requirepass "$TLS_PASSWORD" \
    --tls-cert-file "$RUN/tls/server.crt" --tls-key-file "$RUN/tls/server.key" \
    --tls-ca-cert-file "$RUN/tls/ca.crt" --tls-auth-clients no \
    --dir "$RUN/redis-tls" --save "" --appendonly no \
    --daemonize yes --pidfile "$RUN/redis-tls.pid" --logfile "$RUN/redis-tls.log"
  wait_ping "$TLS_PORT" --tls --cacert "$RUN/tls/ca.crt" -a "$TLS_PASSWORD" --no-auth-warning
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
    start_cluster
    start_tls
    install_tansu
    install_python_kafka
    start_tansu
    echo "redis: redis://127.0.0.1:$REDIS_PORT"
    echo "redis cluster: redis://127.0.0.1:${CLUSTER_PORTS[0]} (masters on ${CLUSTER_PORTS[*]})"
    echo "redis with TLS: rediss://:$TLS_PASSWORD@127.0.0.1:$TLS_PORT (CA: $RUN/tls/ca.crt)"
    echo "kafka (tansu): 127.0.0.1:$KAFKA_PORT"
    ;;
  stop)
    stop_pid "$RUN/redis.pid"
    stop_pid "$RUN/redis-tls.pid"
    stop_pid "$RUN/tansu.pid"
    for port in "${CLUSTER_PORTS[@]}"; do stop_pid "$RUN/cluster-$port.pid"; done
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
