#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, broker+controller in one JVM) without Docker.
# Jars come from Maven Central through `mvn` and are cached; see deploy/local/README.md.
#
#   kafka.sh up [--port N]            start (or reuse) a broker; last stdout line is
#                                     KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<port>
#   kafka.sh down [--port N] [--purge]  stop it; --purge also deletes its data dir
#   kafka.sh status [--port N]        exit 0 if running, 1 if not
#   kafka.sh fetch                    only resolve/cache the jars
#   With KAFKA_SASL_SSL_PORT=N, `up` adds a SASL_SSL listener (SCRAM, throw-away CA) on N
#   and writes the client settings to <data dir>/sasl-ssl/client.env.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$SCRIPT_DIR/pom.xml"
LOG4J_TEMPLATE="$SCRIPT_DIR/log4j2.xml"

KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
LOOPWISE_KAFKA_HOME="${LOOPWISE_KAFKA_HOME:-$HOME/.cache/loopwise/kafka}"
KAFKA_HOST=127.0.0.1

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------- settings ---
# Resolved after argument parsing (--port overrides KAFKA_PORT).
init_settings() {
  KAFKA_PORT="${KAFKA_PORT:-9092}"
  [[ "$KAFKA_PORT" =~ ^[0-9]+$ ]] || die "KAFKA_PORT must be a number, got '$KAFKA_PORT'"
  KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
  [[ "$KAFKA_CONTROLLER_PORT" =~ ^[0-9]+$ ]] || die "KAFKA_CONTROLLER_PORT must be a number"
  [[ "$KAFKA_CONTROLLER_PORT" != "$KAFKA_PORT" ]] || die "KAFKA_CONTROLLER_PORT must differ from KAFKA_PORT"
  DATA_DIR="${LOOPWISE_KAFKA_DATA:-$LOOPWISE_KAFKA_HOME/data-$KAFKA_PORT}"
  PID_FILE="$DATA_DIR/kafka.pid"
  SERVER_PROPS="$DATA_DIR/server.properties"
  LOG_DIR="$DATA_DIR/logs"
  OUT_FILE="$LOG_DIR/kafka.out"
  BOOTSTRAP="$KAFKA_HOST:$KAFKA_PORT"
  # Optional SASL_SSL listener (unset: the broker is exactly the PLAINTEXT one above).
  SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-}"
  if [[ -n "$SASL_SSL_PORT" ]]; then
    [[ "$SASL_SSL_PORT" =~ ^[0-9]+$ ]] || die "KAFKA_SASL_SSL_PORT must be a number, got '$SASL_SSL_PORT'"
    [[ "$SASL_SSL_PORT" != "$KAFKA_PORT" && "$SASL_SSL_PORT" != "$KAFKA_CONTROLLER_PORT" ]] ||
      die "KAFKA_SASL_SSL_PORT must differ from KAFKA_PORT and KAFKA_CONTROLLER_PORT"
  fi
  SASL_DIR="$DATA_DIR/sasl-ssl"
  SCRAM_USER="${KAFKA_SCRAM_USER:-loopwise}"
  SCRAM_MECHANISM="${KAFKA_SCRAM_MECHANISM:-SCRAM-SHA-512}"
  case "$SCRAM_MECHANISM" in
    SCRAM-SHA-256 | SCRAM-SHA-512) ;;
    *) die "KAFKA_SCRAM_MECHANISM must be SCRAM-SHA-256 or SCRAM-SHA-512, got '$SCRAM_MECHANISM'" ;;
  esac
}

lib_dir() { printf '%s/dist/kafka-%s/lib' "$LOOPWISE_KAFKA_HOME" "$KAFKA_VERSION"; }

java_bin() {
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    printf '%s' "$JAVA_HOME/bin/java"
  else
    command -v java || die "java not found (Kafka $KAFKA_VERSION needs Java 17+)"
  fi
}

# ------------------------------------------------------------------- fetch ---
# The cache is valid when its stamp names this version and this pom's checksum;
# then no mvn runs at all (no network, ~instant).
fetch_stamp() { printf '%s %s\n' "$KAFKA_VERSION" "$(sha256sum "$POM" | cut -d' ' -f1)"; }

cmd_fetch() {
  local lib; lib="$(lib_dir)"
  if [[ -f "$lib/.complete" && "$(cat "$lib/.complete")" == "$(fetch_stamp)" ]]; then
    return 0
  fi
  mkdir -p "$LOOPWISE_KAFKA_HOME/dist"
  # Serialize concurrent fetches (e.g. two `up`s on different ports at once).
  exec 8>"$LOOPWISE_KAFKA_HOME/dist/.fetch.lock"
  flock -w 600 8 || die "another kafka.sh has been fetching jars for 10 minutes"
  if [[ -f "$lib/.complete" && "$(cat "$lib/.complete")" == "$(fetch_stamp)" ]]; then
    exec 8>&-
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found (needed once to download the Kafka jars)"
  local tmp; tmp="$(mktemp -d "$LOOPWISE_KAFKA_HOME/dist/.fetch.XXXXXX")"
  local -a mvn_args=(-B -q -Dstyle.color=never -f "$POM" "-Dkafka.version=$KAFKA_VERSION"
    dependency:copy-dependencies "-DoutputDirectory=$tmp/lib" -DincludeScope=runtime)
  log "resolving Apache Kafka $KAFKA_VERSION jars with mvn ..."
  # Offline first (everything may already be in ~/.m2), then online.
  if ! mvn -o "${mvn_args[@]}" >"$tmp/mvn-offline.log" 2>&1; then
    rm -rf "$tmp/lib"
    if ! mvn "${mvn_args[@]}" >"$tmp/mvn.log" 2>&1; then
      tail -n 40 "$tmp/mvn.log" >&2
      rm -rf "$tmp"
      die "mvn could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
    fi
  fi
  compgen -G "$tmp/lib/kafka_2.13-*.jar" >/dev/null || { rm -rf "$tmp"; die "mvn ran but no kafka jar was copied"; }
  fetch_stamp >"$tmp/lib/.complete"
  rm -rf "$lib"
  mkdir -p "$(dirname "$lib")"
  mv "$tmp/lib" "$lib"
  rm -rf "$tmp"
  exec 8>&-
  log "cached $(ls "$lib" | wc -l) jars in $lib"
}

# ----------------------------------------------------------------- helpers ---
# Our broker's pid, if the pid file points at a live JVM running this data dir's config.
running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid; pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  local cmdline=""
  if [[ -r "/proc/$pid/cmdline" ]]; then
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  else
    cmdline="$(ps -o args= -p "$pid" 2>/dev/null || true)"
  fi
  [[ "$cmdline" == *kafka.Kafka*"$SERVER_PROPS"* ]] || return 1
  printf '%s' "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$KAFKA_HOST/$1") 2>/dev/null; }

log_tail() {
  local f
  for f in "$OUT_FILE" "$LOG_DIR/server.log"; do
    if [[ -s "$f" ]]; then
      printf -- '----- last lines of %s -----\n' "$f" >&2
      tail -n 40 "$f" >&2
    fi
  done
}

write_tools_log4j() {
  cat >"$DATA_DIR/tools-log4j2.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="warn">
  <Appenders><Console name="err" target="SYSTEM_ERR"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers><Root level="ERROR"><AppenderRef ref="err"/></Root></Loggers>
</Configuration>
EOF
}

# Run a Kafka CLI class in a short-lived JVM tuned for fast startup.
# With RUN_TOOL_TIMEOUT=N it is killed after N seconds.
run_tool() {
  local java; java="$(java_bin)"
  local -a prefix=()
  [[ -n "${RUN_TOOL_TIMEOUT:-}" ]] && prefix=(timeout "$RUN_TOOL_TIMEOUT")
  "${prefix[@]}" "$java" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto \
    -Djava.awt.headless=true "-Dlog4j2.configurationFile=$DATA_DIR/tools-log4j2.xml" \
    -cp "$(lib_dir)/*" "$@"
}

# A real metadata round trip: list topics through the broker.
probe_metadata() {
  RUN_TOOL_TIMEOUT="$1" run_tool org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$BOOTSTRAP" --list >"$DATA_DIR/probe.log" 2>&1
}

write_server_properties() {
  local auto_create="${KAFKA_AUTO_CREATE_TOPICS:-true}"
  local listeners="PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT"
  local advertised="PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT"
  local protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  if [[ -n "$SASL_SSL_PORT" ]]; then
    listeners="$listeners,SASL_SSL://$KAFKA_HOST:$SASL_SSL_PORT"
    advertised="$advertised,SASL_SSL://localhost:$SASL_SSL_PORT"
    protocols="$protocols,SASL_SSL:SASL_SSL"
  fi
  cat >"$SERVER_PROPS" <<EOF
# Generated by deploy/local/kafka.sh on every \`up\` -- edit KAFKA_* variables instead.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=$listeners
advertised.listeners=$advertised
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=$protocols
log.dirs=$DATA_DIR/kraft

# Single node: every internal topic gets one replica.
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=$auto_create
delete.topic.enable=true
EOF
  if [[ -n "$SASL_SSL_PORT" ]]; then
    cat >>"$SERVER_PROPS" <<EOF

# KAFKA_SASL_SSL_PORT: SCRAM over TLS, certificate signed by the throw-away CA $SASL_DIR/ca.pem
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$SASL_DIR/broker.pem
EOF
  fi
  if [[ -n "${KAFKA_EXTRA_CONFIG:-}" ]]; then
    printf '\n# KAFKA_EXTRA_CONFIG\n%s\n' "$KAFKA_EXTRA_CONFIG" >>"$SERVER_PROPS"
  fi
}

# A throw-away CA and a broker certificate for localhost/127.0.0.1 (made once per data dir),
# and the SCRAM user's password (KAFKA_SCRAM_PASSWORD, else random, kept in the data dir).
make_sasl_ssl_material() {
  mkdir -p "$SASL_DIR"
  chmod 700 "$SASL_DIR"
  if [[ ! -s "$SASL_DIR/broker.pem" ]]; then
    command -v openssl >/dev/null || die "openssl not found (needed for the SASL_SSL listener's certificates)"
    log "making a throw-away CA and broker certificate in $SASL_DIR"
    local tmp; tmp="$(mktemp -d "$SASL_DIR/.tls.XXXXXX")"
    if ! {
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=loopwise-local-ca" \
        -keyout "$tmp/ca.key" -out "$tmp/ca.pem" &&
      openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$tmp/broker.key" -out "$tmp/broker.csr" &&
      printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$tmp/ext.cnf" &&
      openssl x509 -req -in "$tmp/broker.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
        -CAcreateserial -days 3650 -extfile "$tmp/ext.cnf" -out "$tmp/broker.crt" &&
      openssl pkcs8 -topk8 -nocrypt -in "$tmp/broker.key" -out "$tmp/broker.pk8"
    } >"$tmp/openssl.log" 2>&1; then
      cat "$tmp/openssl.log" >&2
      rm -rf "$tmp"
      die "openssl could not make the SASL_SSL certificates"
    fi
    cat "$tmp/broker.pk8" "$tmp/broker.crt" >"$tmp/broker.pem"
    mv "$tmp/ca.pem" "$SASL_DIR/ca.pem"
    mv "$tmp/broker.pem" "$SASL_DIR/broker.pem"
    rm -rf "$tmp"
  fi
  if [[ -n "${KAFKA_SCRAM_PASSWORD:-}" ]]; then
    printf '%s' "$KAFKA_SCRAM_PASSWORD" >"$SASL_DIR/password"
  elif [[ ! -s "$SASL_DIR/password" ]]; then
    openssl rand -hex 16 | tr -d '\n' >"$SASL_DIR/password"
  fi
  chmod 600 "$SASL_DIR/password"
}

# The SCRAM user is created (or its password reset) through the PLAINTEXT listener.
add_scram_user() {
  local password; password="$(cat "$SASL_DIR/password")"
  if ! run_tool org.apache.kafka.tools.ConfigCommand --bootstrap-server "$BOOTSTRAP" --alter \
      --add-config "$SCRAM_MECHANISM=[iterations=8192,password=$password]" \
      --entity-type users --entity-name "$SCRAM_USER" >"$LOG_DIR/scram.log" 2>&1; then
    cat "$LOG_DIR/scram.log" >&2
    die "could not create the SCRAM user '$SCRAM_USER'"
  fi
  (
    umask 077
    cat >"$SASL_DIR/client.env" <<EOF
KAFKA_BOOTSTRAP_SERVERS=localhost:$SASL_SSL_PORT
KAFKA_SECURITY_PROTOCOL=SASL_SSL
KAFKA_SASL_MECHANISM=$SCRAM_MECHANISM
KAFKA_SASL_USERNAME=$SCRAM_USER
KAFKA_SASL_PASSWORD=$password
KAFKA_SSL_CA_LOCATION=$SASL_DIR/ca.pem
EOF
  )
  log "SASL_SSL listener on localhost:$SASL_SSL_PORT ($SCRAM_MECHANISM user '$SCRAM_USER'); client settings in $SASL_DIR/client.env"
}

format_storage() {
  if [[ -f "$DATA_DIR/kraft/meta.properties" ]]; then
    return 0
  fi
  local cluster_id
  if [[ -s "$DATA_DIR/cluster.id" ]]; then
    cluster_id="$(cat "$DATA_DIR/cluster.id")"
  else
    cluster_id="$(run_tool kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    [[ -n "$cluster_id" ]] || die "could not generate a cluster id"
    printf '%s\n' "$cluster_id" >"$DATA_DIR/cluster.id"
  fi
  log "formatting KRaft storage in $DATA_DIR/kraft (cluster id $cluster_id)"
  if ! run_tool kafka.tools.StorageTool format --ignore-formatted -t "$cluster_id" -c "$SERVER_PROPS" \
      >"$LOG_DIR/format.log" 2>&1; then
    cat "$LOG_DIR/format.log" >&2
    die "formatting KRaft storage failed"
  fi
}

start_broker() {
  local java; java="$(java_bin)"
  local heap="${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"
  local perf="${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true}"
  local -a jvm_opts
  # shellcheck disable=SC2206  # word splitting of the option strings is intended
  jvm_opts=($heap $perf ${KAFKA_OPTS:-})
  cp "$LOG4J_TEMPLATE" "$DATA_DIR/log4j2.xml"
  : >"$OUT_FILE"
  log "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (controller $KAFKA_HOST:$KAFKA_CONTROLLER_PORT, data $DATA_DIR)"
  # New session + nohup: the broker outlives this shell and Ctrl-C on a caller.
  # The inner bash writes its own pid and then execs java, so the pid is the JVM's.
  local launcher=()
  command -v setsid >/dev/null && launcher=(setsid)
  nohup "${launcher[@]}" bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
    "$java" "${jvm_opts[@]}" \
    "-Dkafka.logs.dir=$LOG_DIR" \
    "-Dlog4j2.configurationFile=$DATA_DIR/log4j2.xml" \
    "-Dloopwise.kafka.log.level=${KAFKA_LOG_LEVEL:-INFO}" \
    -cp "$(lib_dir)/*" kafka.Kafka "$SERVER_PROPS" \
    >>"$OUT_FILE" 2>&1 </dev/null 8>&- 9>&- &
  local i
  for i in $(seq 50); do [[ -s "$PID_FILE" ]] && break; sleep 0.1; done
  [[ -s "$PID_FILE" ]] || die "broker did not write its pid file"
}

wait_ready() {
  local timeout_s="${KAFKA_START_TIMEOUT:-90}"
  local deadline=$((SECONDS + timeout_s))
  while ((SECONDS < deadline)); do
    if ! running_pid >/dev/null; then
      log_tail
      die "broker process exited during startup (see $LOG_DIR)"
    fi
    if port_open "$KAFKA_PORT"; then
      local left=$((deadline - SECONDS))
      ((left > 30)) && left=30
      ((left < 5)) && left=5
      if probe_metadata "$left"; then
        return 0
      fi
    fi
    sleep 0.3
  done
  log_tail
  [[ -s "$DATA_DIR/probe.log" ]] && { printf -- '----- last probe output -----\n' >&2; tail -n 20 "$DATA_DIR/probe.log" >&2; }
  log "broker not ready after ${timeout_s}s; stopping it"
  stop_broker || true
  die "Kafka did not become ready on $BOOTSTRAP within ${timeout_s}s (KAFKA_START_TIMEOUT)"
}

stop_broker() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    return 1
  fi
  log "stopping Kafka on $BOOTSTRAP (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local limit=$(( ${KAFKA_STOP_TIMEOUT:-30} * 10 )) i=0
  while kill -0 "$pid" 2>/dev/null && ((i < limit)); do sleep 0.1; i=$((i + 1)); done
  if kill -0 "$pid" 2>/dev/null; then
    log "still alive after ${KAFKA_STOP_TIMEOUT:-30}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$PID_FILE"
  return 0
}

# ---------------------------------------------------------------- commands ---
# One `up`/`down` at a time per data dir (fd 9; never inherited by the broker).
lock_data_dir() {
  local wait_s=$(( ${KAFKA_START_TIMEOUT:-90} + 60 ))
  exec 9>"$DATA_DIR/kafka-sh.lock"
  flock -w "$wait_s" 9 || die "another kafka.sh has held $DATA_DIR/kafka-sh.lock for ${wait_s}s"
}

cmd_up() {
  mkdir -p "$DATA_DIR" "$LOG_DIR"
  lock_data_dir
  write_tools_log4j
  local pid
  if pid="$(running_pid)"; then
    if port_open "$KAFKA_PORT"; then
      log "already running on $BOOTSTRAP (pid $pid)"
    else
      log "pid $pid is starting; waiting for it"
      cmd_fetch
      wait_ready
    fi
  else
    rm -f "$PID_FILE"
    if port_open "$KAFKA_PORT"; then
      die "port $KAFKA_PORT is already in use by another process (set KAFKA_PORT)"
    fi
    if port_open "$KAFKA_CONTROLLER_PORT"; then
      die "controller port $KAFKA_CONTROLLER_PORT is already in use (set KAFKA_CONTROLLER_PORT)"
    fi
    local java; java="$(java_bin)"
    local jv; jv="$("$java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)"
    [[ -z "$jv" || "$jv" -ge 17 ]] || die "Kafka $KAFKA_VERSION needs Java 17+, found Java $jv ($java)"
    if [[ -n "$SASL_SSL_PORT" ]] && port_open "$SASL_SSL_PORT"; then
      die "SASL_SSL port $SASL_SSL_PORT is already in use (set KAFKA_SASL_SSL_PORT)"
    fi
    cmd_fetch
    [[ -z "$SASL_SSL_PORT" ]] || make_sasl_ssl_material
    write_server_properties
    format_storage
    start_broker
    wait_ready
    log "Kafka $KAFKA_VERSION ready on $BOOTSTRAP (pid $(running_pid), logs $LOG_DIR/server.log)"
  fi
  if [[ -n "$SASL_SSL_PORT" ]]; then
    grep -q "^listeners=.*SASL_SSL://$KAFKA_HOST:$SASL_SSL_PORT" "$SERVER_PROPS" ||
      die "the broker on $BOOTSTRAP runs without a SASL_SSL listener on $SASL_SSL_PORT: kafka.sh down, then up again"
    add_scram_user
  fi
  exec 9>&-
  printf 'KAFKA_BOOTSTRAP_SERVERS=%s\n' "$BOOTSTRAP"
}

cmd_down() {
  local purge="$1"
  if [[ -d "$DATA_DIR" ]]; then
    lock_data_dir
    stop_broker || log "not running on $BOOTSTRAP"
    exec 9>&-
  else
    log "not running on $BOOTSTRAP"
  fi
  if [[ "$purge" == 1 && -e "$DATA_DIR" ]]; then
    case "$DATA_DIR" in
      "" | / | "$HOME" | "$HOME/" | "$LOOPWISE_KAFKA_HOME" | "$LOOPWISE_KAFKA_HOME/")
        die "refusing to purge '$DATA_DIR'" ;;
    esac
    log "removing $DATA_DIR"
    rm -rf -- "$DATA_DIR"
  fi
}

cmd_status() {
  local pid
  if pid="$(running_pid)" && port_open "$KAFKA_PORT"; then
    local version="?"
    [[ -r "/proc/$pid/cmdline" ]] && version="$(tr '\0' '\n' <"/proc/$pid/cmdline" |
      sed -n 's|.*/dist/kafka-\([^/]*\)/lib/\*$|\1|p' | head -n 1)"
    printf 'running pid=%s version=%s data=%s\n' "$pid" "${version:-?}" "$DATA_DIR"
    printf 'KAFKA_BOOTSTRAP_SERVERS=%s\n' "$BOOTSTRAP"
    return 0
  fi
  if [[ -n "${pid:-}" ]]; then
    printf 'starting pid=%s (port %s not answering yet)\n' "$pid" "$KAFKA_PORT"
  else
    printf 'not running (port %s)\n' "$KAFKA_PORT"
  fi
  return 1
}

main() {
  [[ $# -ge 1 ]] || usage
  local cmd="$1"; shift
  local purge=0
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --port) [[ $# -ge 2 ]] || die "--port needs a value"; KAFKA_PORT="$2"; shift 2 ;;
      --port=*) KAFKA_PORT="${1#--port=}"; shift ;;
      --purge) purge=1; shift ;;
      -h | --help) usage ;;
      *) die "unknown argument '$1'" ;;
    esac
  done
  init_settings
  case "$cmd" in
    up) cmd_up ;;
    down) cmd_down "$purge" ;;
    status) cmd_status ;;
    fetch) cmd_fetch; log "Kafka $KAFKA_VERSION jars ready in $(lib_dir)" ;;
    -h | --help | help) usage ;;
    *) die "unknown command '$cmd' (up | down | status | fetch)" ;;
  esac
}

# Keep `exit` on this line: bash must not read past it if the file is edited while running.
main "$@"; exit $?
