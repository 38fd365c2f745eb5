#!/usr/bin/env bash
# The local stack without Docker: three KRaft Kafka nodes (jars from Maven Central), two Postgres
# clusters (control :5432, demo warehouse :5433) and SeaweedFS as the S3 server, all on 127.0.0.1.
#
#   stack.sh up | down | status | logs [component]
#   stack.sh kafka-start N | kafka-stop N | kafka-kill N     (tests use these)
#   stack.sh s3-start | s3-stop | pg-start NAME | pg-stop NAME | start SERVICE | stop SERVICE
#   stack.sh prom-start | prom-stop                          (prom-start re-reads deploy/prometheus)
#   stack.sh rolling-restart                                 (every Skein instance, one at a time)
#   stack.sh scale N                                         (N instances of every Skein service)
#
# SKEIN_SCALE=N stack.sh up runs N instances of every Skein service: the gate, the spool and the
# control service behind HAProxy on their usual ports, the rest side by side (instance i of a
# service is SERVICE@i; `start`/`stop` take either one instance or a service's every instance).
#
# Runtime data and logs live under $SKEIN_RUN_DIR (default <checkout>/.run), the Kafka jars
# under $SKEIN_CACHE_DIR (default <checkout>/.cache). Both are git-ignored.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUN_DIR=${SKEIN_RUN_DIR:-$ROOT/.run}
CACHE_DIR=${SKEIN_CACHE_DIR:-$ROOT/.cache}
VENV=${SKEIN_VENV:-$ROOT/.venv}
LOGS=$RUN_DIR/logs
PIDS=$RUN_DIR/pids
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/deploy/local/kafka/pom.xml")
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
KAFKA_LIBS=$CACHE_DIR/kafka-$KAFKA_VERSION/libs
JMX_VERSION=$(sed -n 's:.*<jmx.exporter.version>\(.*\)</jmx.exporter.version>.*:\1:p' "$ROOT/deploy/local/kafka/pom.xml")
JMX_AGENT=$CACHE_DIR/jmx-exporter-$JMX_VERSION/jmx_prometheus_javaagent-$JMX_VERSION.jar
PROM_DIR=$RUN_DIR/prometheus
KAFKA_HEAP=${SKEIN_KAFKA_HEAP:-512m}
# C1 only: a just-started broker's C2 compiles took ~5 CPU-s of every 30 s of load for its first
# ten minutes and more (brokers 30-38 CPU-s per GB of records just after a start; 18-20 with C1
# from the start). The local stack's brokers restart often (tests, make up); set it empty for C2.
read -r -a KAFKA_JVM_OPTS <<<"${SKEIN_KAFKA_JVM_OPTS--XX:TieredStopAtLevel=1}"
TOPIC=${SKEIN_TOPIC:-skein.records}
PARTITIONS=${SKEIN_TOPIC_PARTITIONS:-12}
S3_BUCKET=${SKEIN_S3_BUCKET:-skein}
S3_ACCESS_KEY=${SKEIN_S3_ACCESS_KEY:-skein}
# The buckets of the stack's S3 a destination may write to (an Iceberg destination's lake;
# common/netpolicy.py): created with the batch bucket, and set for skein, the tests and every
# service (SKEIN_DESTINATION_PLATFORM_S3_BUCKETS; never the batch bucket).
export SKEIN_DESTINATION_PLATFORM_S3_BUCKETS=${SKEIN_DESTINATION_PLATFORM_S3_BUCKETS-lake}
PG_CLUSTERS=(control:5432:skein warehouse:5433:warehouse)
# Secrets generated at the first `up` (mode 0600), and the env file `skein`, the tests and the
# demo read them from (common/settings.py). The services get only their own (svc_start).
SECRETS=$RUN_DIR/secrets
ENV_FILE=$RUN_DIR/skein.env
export SKEIN_ENV_FILE=${SKEIN_ENV_FILE:-$ENV_FILE}
# SCRAM-SHA-512 principals on Kafka: broker (inter-broker), admin (skein kafka, tests), gate and
# streamery (ACLs from `skein kafka ensure-acls`). The controllers use SASL/PLAIN as `controller`.
KAFKA_SCRAM_USERS=(broker admin gate streamery)

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p "$LOGS" "$PIDS"
# Tenants' records (Kafka's segments, S3's volumes) are the stack's alone: their directories are
# 0700; the run directory only lets other users (postgres) traverse it to their own.
mkdir -p "$RUN_DIR/kafka" "$RUN_DIR/s3"
chmod 711 "$RUN_DIR"
chmod 700 "$RUN_DIR/kafka" "$RUN_DIR/s3"

# ---------------------------------------------------------------- processes
pid_alive() { # pidfile; a zombie (killed, not yet reaped by init) is not alive
  [[ -f $1 ]] || return 1
  local pid state
  pid=$(cat "$1")
  kill -0 "$pid" 2>/dev/null || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $state != Z ]]
}

wait_port() { # port seconds
  local deadline=$((SECONDS + $2))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

daemon() { # pidfile logfile command...
  # Its own session (setsid), so it outlives the shell and the process group that started it;
  # the process writes its own pid before exec'ing the command.
  local pidfile=$1 logfile=$2; shift 2
  rm -f "$pidfile"
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 &
  local deadline=$((SECONDS + 10))
  until [[ -s $pidfile ]]; do ((SECONDS < deadline)) || die "could not start $*"; sleep 0.05; done
}

stop_pid() { # pidfile seconds-before-kill
  local f=$1 pid
  pid_alive "$f" || { rm -f "$f"; return 0; }
  pid=$(cat "$f")
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then kill -KILL "$pid" 2>/dev/null || true; fi
    sleep 0.2
  done
  rm -f "$f"
}

# ---------------------------------------------------------------- secrets
secret() { # name -> prints the secret, generating it (48 hex digits, mode 0600) on first use
  local f=$SECRETS/$1
  if [[ ! -s $f ]]; then
    (
      umask 077
      mkdir -p "$SECRETS"
      python3 -c 'import secrets; print(secrets.token_hex(24), end="")' >"$f.tmp"
      mv "$f.tmp" "$f"
    )
  fi
  cat "$f"
}

control_dsn() { echo "postgresql://postgres:$(secret pg-control)@127.0.0.1:5432/skein"; }

secrets_up() { # every secret of the stack, and the env file for skein and the tests
  (umask 077; mkdir -p "$SECRETS")
  chmod 700 "$SECRETS"
  local u
  for u in "${KAFKA_SCRAM_USERS[@]}"; do secret "kafka-$u" >/dev/null; done
  for u in kafka-controller pg-control pg-warehouse s3 spool-token; do secret "$u" >/dev/null; done
  (
    umask 077
    cat >"$ENV_FILE.tmp" <<EOF
# Written by deploy/local/stack.sh from $SECRETS: the local stack's credentials for skein,
# the tests and the demo (Kafka as the admin principal). Services get only their own.
SKEIN_KAFKA_USERNAME=admin
SKEIN_KAFKA_PASSWORD=$(secret kafka-admin)
SKEIN_CONTROL_DSN=$(control_dsn)
SKEIN_S3_SECRET_KEY=$(secret s3)
SKEIN_SPOOL_TOKEN=$(secret spool-token)
SKEIN_DESTINATION_PLATFORM_S3_BUCKETS=$SKEIN_DESTINATION_PLATFORM_S3_BUCKETS
# Not a service setting: the demo warehouse, for the demo, the tests and psql.
SKEIN_DEMO_WAREHOUSE_DSN=postgresql://postgres:$(secret pg-warehouse)@127.0.0.1:5433/warehouse
EOF
    mv "$ENV_FILE.tmp" "$ENV_FILE"
    # A libpq password file for the tests' and operators' own connections (PGPASSFILE).
    printf '127.0.0.1:5432:*:postgres:%s\n127.0.0.1:5433:*:postgres:%s\n' \
      "$(secret pg-control)" "$(secret pg-warehouse)" >"$SECRETS/pgpass"
  )
}

# ---------------------------------------------------------------- the taps' firewall
TAP_USER=skein-tap

tap_firewall() { # as root: the tap user reaches no loopback port but DNS and the Postgres clusters
  # A tap shares the host's network (it reads its sources over it). The platform's own ports
  # on loopback (SeaweedFS's filer and master, which ask for no credentials, Prometheus, the
  # spool, Kafka, ...) are closed to it here; the Postgres clusters ask for SCRAM passwords.
  [[ $EUID -eq 0 ]] || { log "not root: taps run as this user, without a firewall rule"; return 0; }
  id -u "$TAP_USER" >/dev/null 2>&1 || return 0
  local ipt
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    {
      "$ipt" -w -N SKEIN_TAPS 2>/dev/null || "$ipt" -w -F SKEIN_TAPS
      "$ipt" -w -A SKEIN_TAPS -p udp --dport 53 -j RETURN &&
        "$ipt" -w -A SKEIN_TAPS -p tcp -m multiport --dports 53,5432,5433 -j RETURN &&
        "$ipt" -w -A SKEIN_TAPS -p tcp -j REJECT --reject-with tcp-reset &&
        "$ipt" -w -A SKEIN_TAPS -j REJECT &&
        { "$ipt" -w -C OUTPUT -o lo -m owner --uid-owner "$TAP_USER" -j SKEIN_TAPS 2>/dev/null ||
          "$ipt" -w -A OUTPUT -o lo -m owner --uid-owner "$TAP_USER" -j SKEIN_TAPS; }
    } || log "WARNING: $ipt refused the taps' firewall rule; taps can reach the platform's loopback ports"
  done
}

# ---------------------------------------------------------------- prerequisites
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

apt_install() { # packages...
  log "installing with apt: $*"
  # Keep package scripts from starting Debian's own services (a Postgres cluster or a
  # Prometheus on our ports): policy-rc.d 101 = "action forbidden".
  local policy=/usr/sbin/policy-rc.d had_policy=0
  [[ -e $policy ]] && had_policy=1
  if ((had_policy == 0)); then printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null; as_root chmod +x "$policy"; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  local rc=$?
  ((had_policy == 1)) || as_root rm -f "$policy"
  return $rc
}

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [[ -x $d/postgres ]] && { echo "$d"; return; }; done
  return 1
}

ensure_prereqs() {
  local missing=()
  command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  pg_bin >/dev/null || missing+=(postgresql)
  command -v prometheus >/dev/null || missing+=(prometheus)
  command -v bwrap >/dev/null || missing+=(bubblewrap)  # the extractor's tap sandbox
  command -v chromium >/dev/null || missing+=(chromium)  # the console's browser tests (Playwright)
  [[ $EUID -ne 0 ]] || command -v iptables >/dev/null || missing+=(iptables)  # tap_firewall
  if ((${#missing[@]})); then
    command -v apt-get >/dev/null && apt_install "${missing[@]}" ||
      die "missing prerequisites: ${missing[*]} (install them, e.g. apt-get install ${missing[*]})"
  fi
  # Taps run as this unprivileged user when the extractor runs as root (services/extractor/sandbox.py).
  if [[ $EUID -eq 0 ]] && ! id -u skein-tap >/dev/null 2>&1; then
    log "creating the system user skein-tap (taps run as it)"
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin skein-tap
  fi
  [[ -x $VENV/bin/skein ]] || die "no virtualenv at $VENV: run 'make install' first"
  [[ -x $VENV/bin/weed ]] || die "SeaweedFS missing from $VENV: run 'make install' first"
}

# ---------------------------------------------------------------- kafka
kafka_fetch() {
  [[ -f $KAFKA_LIBS/.complete ]] && return 0
  log "fetching Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_LIBS"
  rm -rf "$KAFKA_LIBS"
  mvn -B -q -f "$ROOT/deploy/local/kafka/pom.xml" "$DEP_PLUGIN:copy-dependencies" \
    -DoutputDirectory="$KAFKA_LIBS" -DincludeScope=runtime \
    -DexcludeArtifactIds=jmx_prometheus_javaagent >&2 || die "maven could not fetch Kafka"
  touch "$KAFKA_LIBS/.complete"
}

jmx_fetch() { # the JMX exporter javaagent: brokers' metrics for Prometheus, off Kafka's classpath
  [[ -f $JMX_AGENT ]] && return 0
  log "fetching the Prometheus JMX exporter $JMX_VERSION from Maven Central"
  mvn -B -q -f "$ROOT/deploy/local/kafka/pom.xml" "$DEP_PLUGIN:copy-dependencies" \
    -DoutputDirectory="$(dirname "$JMX_AGENT")" -DincludeArtifactIds=jmx_prometheus_javaagent \
    -DexcludeTransitive=true >&2 || die "maven could not fetch the JMX exporter"
}

java_cmd() { # log4j-dir -> sets JAVA_CMD (java with the Kafka classpath and options)
  mkdir -p "$RUN_DIR/tmp"
  JAVA_CMD=(java -Xms256m "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true "${KAFKA_JVM_OPTS[@]}"
    "-Djava.io.tmpdir=$RUN_DIR/tmp"
    "-Dlog4j2.configurationFile=$ROOT/deploy/local/kafka/log4j2.properties"
    "-Dkafka.logs.dir=$1" -cp "$KAFKA_LIBS/*")
}

kafka_java() { # log4j-dir main-class args...
  java_cmd "$1"; shift
  "${JAVA_CMD[@]}" "$@"
}

kafka_configure() { # node -> props path; formats storage once (with the SCRAM credentials)
  local n=$1 dir=$RUN_DIR/kafka/$n
  mkdir -p "$dir/data" "$LOGS/kafka-$n"
  # It holds the broker's and controller's passwords: 0600, and filled in by bash, not by
  # a command whose argv (visible in /proc) would carry them.
  local props
  props=$(<"$ROOT/deploy/local/kafka/server.properties.tmpl")
  props=${props//@NODE_ID@/$n}
  props=${props//@DATA_DIR@/$dir/data}
  props=${props//@PARTITIONS@/$PARTITIONS}
  props=${props//@BROKER_PASSWORD@/$(secret kafka-broker)}
  props=${props//@CONTROLLER_PASSWORD@/$(secret kafka-controller)}
  rm -f "$dir/server.properties"
  (umask 077; printf '%s\n' "$props" >"$dir/server.properties")
  if [[ -n ${SKEIN_KAFKA_BENCH_PLAINTEXT:-} ]]; then
    # bench/gate_bench.py only: an extra PLAINTEXT listener on N9095 (anonymous, ACL'd to the
    # bench's topics) to measure authentication's cost on the same brokers. Never set otherwise.
    sed -i -e "s|^listeners=.*|&,BENCH://127.0.0.1:${n}9095|" \
      -e "s|^advertised.listeners=.*|&,BENCH://127.0.0.1:${n}9095|" \
      -e "s|^listener.security.protocol.map=.*|&,BENCH:PLAINTEXT|" "$dir/server.properties"
  fi
  if [[ -f $dir/data/meta.properties && ! -f $dir/scram ]]; then
    die "kafka node $n was formatted before the stack authenticated its clients (no SCRAM users). Let the pipeline drain, then start afresh: 'make down && rm -rf $RUN_DIR && make up' (the spool's offsets would not match a new cluster)"
  fi
  if [[ ! -f $dir/data/meta.properties ]]; then
    [[ -f $RUN_DIR/kafka/cluster-id ]] ||
      kafka_java "$LOGS/kafka-$n" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1 >"$RUN_DIR/kafka/cluster-id"
    log "formatting storage of kafka node $n"
    local scram=() u
    for u in "${KAFKA_SCRAM_USERS[@]}"; do scram+=(--add-scram "SCRAM-SHA-512=[name=$u,password=$(secret "kafka-$u")]"); done
    kafka_java "$LOGS/kafka-$n" kafka.tools.StorageTool format -t "$(cat "$RUN_DIR/kafka/cluster-id")" \
      -c "$dir/server.properties" "${scram[@]}" >>"$LOGS/kafka-$n/format.log" 2>&1 || die "formatting kafka node $n failed"
    touch "$dir/scram"
  fi
  echo "$dir/server.properties"
}

kafka_start() { # node
  local n=$1 props
  pid_alive "$PIDS/kafka-$n.pid" && return 0
  props=$(kafka_configure "$n")
  log "starting kafka node $n on 127.0.0.1:${n}9092"
  java_cmd "$LOGS/kafka-$n"
  # Broker metrics on 127.0.0.1:N9404 (JMX exporter agent), scraped by Prometheus.
  daemon "$PIDS/kafka-$n.pid" "$LOGS/kafka-$n/stdout.log" "${JAVA_CMD[@]}" \
    "-javaagent:$JMX_AGENT=127.0.0.1:${n}9404:$ROOT/deploy/local/kafka/jmx-exporter.yaml" kafka.Kafka "$props"
}

kafka_stop() { stop_pid "$PIDS/kafka-$1.pid" 60; }

kafka_kill() {
  local f=$PIDS/kafka-$1.pid
  pid_alive "$f" && kill -KILL "$(cat "$f")" 2>/dev/null
  while pid_alive "$f"; do sleep 0.1; done
  rm -f "$f"
}

kafka_down() {
  # All three nodes at once: stopping them one by one leaves the last without a controller quorum.
  local n
  for n in 1 2 3; do pid_alive "$PIDS/kafka-$n.pid" && kill -TERM "$(cat "$PIDS/kafka-$n.pid")" 2>/dev/null; done
  for n in 1 2 3; do kafka_stop "$n"; done
}

kafka_up() {
  kafka_fetch
  jmx_fetch
  mkdir -p "$RUN_DIR/kafka"
  local n
  for n in 1 2 3; do kafka_configure "$n" >/dev/null; done
  for n in 1 2 3; do kafka_start "$n"; done
  for n in 1 2 3; do wait_port "${n}9092" 90 || die "kafka node $n did not open ${n}9092 (see $LOGS/kafka-$n)"; done
  SKEIN_TOPIC=$TOPIC "$VENV/bin/skein" kafka wait-ready --brokers 3 --isr 0 --timeout 90 >/dev/null || die "kafka brokers did not register"
  SKEIN_TOPIC=$TOPIC SKEIN_TOPIC_PARTITIONS=$PARTITIONS "$VENV/bin/skein" kafka ensure-topic >&2
  SKEIN_TOPIC=$TOPIC "$VENV/bin/skein" kafka ensure-acls >&2
  SKEIN_TOPIC=$TOPIC "$VENV/bin/skein" kafka wait-ready --brokers 3 --isr 3 --timeout 90 >&2 ||
    die "kafka not ready (see $LOGS/kafka-*/server.log)"
}

# ---------------------------------------------------------------- postgres
PG_USER_RUN=()
[[ $EUID -eq 0 ]] && PG_USER_RUN=(runuser -u postgres --)

pg_dir() { echo "$RUN_DIR/pg/$1"; }

stop_debian_default_cluster() {
  # Debian's package may have created and started its own cluster on 5432.
  command -v pg_lsclusters >/dev/null || return 0
  local line ver name port status
  while read -r ver name port status _; do
    [[ $status == online* ]] || continue
    if [[ $port == 5432 || $port == 5433 ]]; then
      log "stopping Debian's default Postgres cluster $ver/$name on port $port"
      as_root pg_ctlcluster "$ver" "$name" stop || true
    fi
  done < <(pg_lsclusters --no-header 2>/dev/null || true)
}

pg_start() { # name
  local spec port db bin data
  for spec in "${PG_CLUSTERS[@]}"; do [[ ${spec%%:*} == "$1" ]] && break; done
  IFS=: read -r _ port db <<<"$spec"
  bin=$(pg_bin) || die "PostgreSQL server binaries not found"
  data=$(pg_dir "$1")
  mkdir -p "$RUN_DIR/pg" "$LOGS"
  [[ $EUID -eq 0 ]] && chown postgres: "$RUN_DIR/pg"
  if [[ ${#PG_USER_RUN[@]} -gt 0 ]] && ! runuser -u postgres -- test -x "$RUN_DIR/pg"; then
    die "user postgres cannot reach $RUN_DIR/pg; set SKEIN_RUN_DIR to a directory it can traverse"
  fi
  local password
  password=$(secret "pg-$1")
  if [[ ! -f $data/PG_VERSION ]]; then
    log "initialising Postgres cluster '$1' in $data (SCRAM-SHA-256, password in $SECRETS/pg-$1)"
    local pwfile=$RUN_DIR/pg/.pwfile-$1
    (umask 077; printf '%s\n' "$password" >"$pwfile")
    [[ $EUID -eq 0 ]] && chown postgres: "$pwfile"
    "${PG_USER_RUN[@]}" "$bin/initdb" -D "$data" -U postgres -A scram-sha-256 --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 >"$LOGS/pg-$1-initdb.log" 2>&1 ||
      { rm -f "$pwfile"; die "initdb failed (see $LOGS/pg-$1-initdb.log)"; }
    rm -f "$pwfile"
  fi
  if ! "${PG_USER_RUN[@]}" "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    log "starting Postgres '$1' on 127.0.0.1:$port"
    touch "$LOGS/pg-$1.log"
    [[ $EUID -eq 0 ]] && chown postgres: "$LOGS/pg-$1.log"
    "${PG_USER_RUN[@]}" "$bin/pg_ctl" -D "$data" -l "$LOGS/pg-$1.log" -w -t 60 \
      -o "-p $port -c listen_addresses=127.0.0.1 -k $data -c max_connections=200 -c shared_buffers=128MB -c fsync=on" \
      start >/dev/null || die "postgres '$1' failed to start (see $LOGS/pg-$1.log)"
  fi
  if grep -Eq '^[^#]*[[:space:]]trust([[:space:]]|$)' "$data/pg_hba.conf"; then
    # A cluster from before the stack used passwords: set one, then allow only SCRAM.
    log "Postgres '$1': replacing trust authentication by SCRAM-SHA-256"
    # (the password, hex digits, travels on stdin: never in an argv other users can read)
    "${PG_USER_RUN[@]}" "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAq -v ON_ERROR_STOP=1 \
      <<<"SET password_encryption = 'scram-sha-256'; ALTER ROLE postgres PASSWORD '$password';" >/dev/null ||
      die "could not set the password of Postgres '$1'"
    "${PG_USER_RUN[@]}" sed -i -E 's/[[:space:]]trust([[:space:]]*)$/ scram-sha-256\1/' "$data/pg_hba.conf"
    "${PG_USER_RUN[@]}" "$bin/pg_ctl" -D "$data" reload >/dev/null
  fi
  local name  # the demo warehouse cluster also holds the Iceberg loader's SQL catalog, lakehouse
  for name in "$db" $([[ $1 == warehouse ]] && echo lakehouse); do
    PGPASSWORD=$password "${PG_USER_RUN[@]}" "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAq \
      -c "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1 ||
      PGPASSWORD=$password "${PG_USER_RUN[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$name"
  done
}

pg_stop() { # name
  local bin data
  bin=$(pg_bin) || return 0
  data=$(pg_dir "$1")
  [[ -f $data/PG_VERSION ]] || return 0
  "${PG_USER_RUN[@]}" "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1 || return 0
  log "stopping Postgres '$1'"
  "${PG_USER_RUN[@]}" "$bin/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null
}

pg_up() {
  stop_debian_default_cluster
  local spec
  for spec in "${PG_CLUSTERS[@]}"; do pg_start "${spec%%:*}"; done
  "$VENV/bin/skein" db migrate >&2
}

# ---------------------------------------------------------------- s3 (SeaweedFS)
s3_start() {
  pid_alive "$PIDS/s3.pid" && return 0
  mkdir -p "$RUN_DIR/s3/data"
  (
    umask 077
    rm -f "$RUN_DIR/s3/identities.json"  # one from an older stack may be 0644
    cat >"$RUN_DIR/s3/identities.json" <<EOF
{"identities":[{"name":"skein","credentials":[{"accessKey":"$S3_ACCESS_KEY","secretKey":"$(secret s3)"}],
 "actions":["Admin","Read","Write","List","Tagging"]}]}
EOF
  )
  log "starting SeaweedFS S3 on 127.0.0.1:8333"
  # Every component's port is pinned so nothing wanders onto ours; WebDAV, Iceberg, Lance and
  # the admin UI are not needed.
  daemon "$PIDS/s3.pid" "$LOGS/s3.log" "$VENV/bin/weed" mini -dir="$RUN_DIR/s3/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.telemetry=false -bucket="$S3_BUCKET" -s3.config="$RUN_DIR/s3/identities.json" \
    -master.port=9333 -volume.port=9340 -filer.port=8888 -s3.port=8333 -admin.port=23646 \
    -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0
}

s3_wait() {
  wait_port 8333 60 || die "S3 did not open 8333 (see $LOGS/s3.log)"
  local lakes
  IFS=, read -r -a lakes <<<"${SKEIN_DESTINATION_PLATFORM_S3_BUCKETS//[[:space:]]/}"
  SKEIN_S3_SECRET_KEY=$(secret s3) "$VENV/bin/python" - "$S3_BUCKET" "${lakes[@]}" <<'EOF' || die "S3 bucket not reachable (see $LOGS/s3.log)"
import sys, time, boto3, os
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:8333", region_name="us-east-1",
                  aws_access_key_id=os.environ.get("SKEIN_S3_ACCESS_KEY", "skein"),
                  aws_secret_access_key=os.environ["SKEIN_S3_SECRET_KEY"],
                  config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5))
deadline = time.monotonic() + 60
for bucket in sys.argv[1:]:
    while True:
        try:
            s3.head_bucket(Bucket=bucket); break
        except Exception:
            try: s3.create_bucket(Bucket=bucket); break
            except Exception:
                if time.monotonic() > deadline: raise
                time.sleep(0.5)
EOF
}

s3_stop() { stop_pid "$PIDS/s3.pid" 20; }

# ---------------------------------------------------------------- prometheus
# Debian's Prometheus (its own service never starts: see apt_install) on 127.0.0.1:9090, data in
# $PROM_DIR/data. deploy/prometheus/ is copied there at each start; scrape targets are files in
# $PROM_DIR/targets that svc_start/svc_stop write and remove, so a service the stack does not
# run (a loader left out of SKEIN_LOADERS) is never a target, and one that crashed shows as down.
prom_target() { # file job address [extra labels json] -> writes its file_sd file (atomically:
  # Prometheus watches the directory and would read a half-written file)
  mkdir -p "$PROM_DIR/targets"
  printf '[{"targets": ["%s"], "labels": {"job": "%s"%s}}]\n' "$3" "$2" "${4:+, $4}" >"$PROM_DIR/targets/.$1.tmp"
  mv "$PROM_DIR/targets/.$1.tmp" "$PROM_DIR/targets/$1.json"
}

prom_job() { # service name -> job label (loaders.postgres -> loader-postgres)
  local name=${1/loaders./loader-}
  echo "${name//./-}"
}

prom_start() {
  mkdir -p "$PROM_DIR/data" "$PROM_DIR/targets"
  rm -rf "$PROM_DIR/rules"
  cp -r "$ROOT/deploy/prometheus/rules" "$PROM_DIR/rules"
  cp "$ROOT/deploy/prometheus/prometheus.yml" "$PROM_DIR/prometheus.yml"
  local n
  for n in 1 2 3; do prom_target "kafka-$n" kafka "127.0.0.1:${n}9404" "\"node\": \"$n\""; done
  prom_target prometheus prometheus 127.0.0.1:9090
  if pid_alive "$PIDS/prometheus.pid"; then
    kill -HUP "$(cat "$PIDS/prometheus.pid")"  # re-read the configuration and rules
    return 0
  fi
  if wait_port 9090 0; then
    # Debian's package enables its own service for boot (policy-rc.d only kept it from starting
    # at install): after a reboot it holds 9090 on every interface.
    log "port 9090 is taken: disabling Debian's own prometheus service"
    { command -v systemctl >/dev/null && as_root systemctl disable --now prometheus; } >/dev/null 2>&1 || true
    sleep 1
    wait_port 9090 0 && die "port 9090 is in use by another process; stop it and run again"
  fi
  log "starting Prometheus on 127.0.0.1:9090"
  daemon "$PIDS/prometheus.pid" "$LOGS/prometheus.log" prometheus \
    --config.file="$PROM_DIR/prometheus.yml" --storage.tsdb.path="$PROM_DIR/data" \
    --storage.tsdb.retention.time=7d --web.listen-address=127.0.0.1:9090
  local deadline=$((SECONDS + 60))
  until curl -fsS http://127.0.0.1:9090/-/ready >/dev/null 2>&1; do
    pid_alive "$PIDS/prometheus.pid" || die "Prometheus exited during start (see $LOGS/prometheus.log)"
    ((SECONDS < deadline)) || die "Prometheus not ready within 60s (see $LOGS/prometheus.log)"
    sleep 0.2
  done
}

prom_stop() { stop_pid "$PIDS/prometheus.pid" 20; }

# ---------------------------------------------------------------- scale (SKEIN_SCALE)
# How many instances of each Skein service run: SKEIN_SCALE at `up` (default 1), remembered in
# $RUN_DIR/scale for every later command (a plain `up` is scale 1 again).
SCALE_FILE=$RUN_DIR/scale
if [[ ${1:-} == up ]]; then SCALE=${SKEIN_SCALE:-1}; else SCALE=${SKEIN_SCALE:-$(cat "$SCALE_FILE" 2>/dev/null || echo 1)}; fi
[[ $SCALE =~ ^[1-9]$ ]] || die "SKEIN_SCALE must be a number from 1 to 9 (got '$SCALE')"
HAPROXY_DIR=$RUN_DIR/haproxy
# Behind HAProxy when scaled: clients keep the one address. Instance i of these listens on its
# usual ports + 1000*i; instance i of the others on its usual ports + 1000*(i-1).
PROXIED=(gate spool control)

inst_base() { echo "${1%@*}"; }                                      # gate@2 -> gate
inst_index() { if [[ $1 == *@* ]]; then echo "${1##*@}"; else echo 1; fi; }
inst_name() { if (($2 == 1)); then echo "$1"; else echo "$1@$2"; fi; }  # base index -> name
is_proxied() { ((SCALE > 1)) && [[ " ${PROXIED[*]} " == *" $1 "* ]]; }
inst_shift() { # instance -> offset of its ports
  local base i
  base=$(inst_base "$1")
  i=$(inst_index "$1")
  if is_proxied "$base"; then echo $((1000 * i)); else echo $((1000 * (i - 1))); fi
}
instances() { # base -> the names of its instances that have a pid file (running or not)
  local f
  for f in "$PIDS/$1.pid" "$PIDS/$1"@*.pid; do [[ -e $f ]] && basename "$f" .pid; done
  return 0
}

# ---------------------------------------------------------------- skein services
# name:port of each Skein service `up` starts. One loader process per warehouse type; which
# ones start is SKEIN_LOADERS (comma-separated, default postgres), e.g.
# SKEIN_LOADERS=postgres,bigquery make up. The extractor (scheduled Singer taps) posts to the gate.
declare -A LOADER_PORTS=([postgres]=9103 [redshift]=9104 [bigquery]=9105 [snowflake]=9106 [iceberg]=9109)
SERVICES=(spool:8081 control:8082 gate:8080 streamery:9102 extractor:9107)
UNKNOWN_LOADERS=()  # refused by `up` only: `down` and the rest must work whatever is set
IFS=, read -r -a _loaders <<<"${SKEIN_LOADERS:-postgres}"
for _l in "${_loaders[@]}"; do
  _l=${_l//[[:space:]]/}
  [[ -n $_l ]] || continue
  if [[ -n ${LOADER_PORTS[$_l]:-} ]]; then SERVICES+=("loaders.$_l:${LOADER_PORTS[$_l]}"); else UNKNOWN_LOADERS+=("$_l"); fi
done

base_port() { # service; any loader can be started by name even when SKEIN_LOADERS leaves it out
  local spec
  for spec in "${SERVICES[@]}"; do if [[ ${spec%%:*} == "$1" ]]; then echo "${spec#*:}"; return; fi; done
  if [[ $1 == loaders.* ]]; then echo "${LOADER_PORTS[${1#loaders.}]:-}"; fi
}

svc_port() { # instance -> the port it answers on (/healthz there)
  local port
  port=$(base_port "$(inst_base "$1")")
  if [[ -n $port ]]; then echo $((port + $(inst_shift "$1"))); fi
}

scrape_port() { # instance port -> where Prometheus scrapes it, and where /readyz is (the gate's
  # and the control service's /metrics are on an internal port only)
  case $(inst_base "$1") in
    gate) echo $((${SKEIN_GATE_METRICS_PORT:-9101} + $(inst_shift "$1"))) ;;
    control) echo $((${SKEIN_CONTROL_METRICS_PORT:-9108} + $(inst_shift "$1"))) ;;
    *) echo "$2" ;;
  esac
}

prom_file() { # instance -> its Prometheus target file's name (loaders.postgres@2 -> loader-postgres@2)
  local base
  base=$(inst_base "$1")
  echo "$(prom_job "$base")${1#"$base"}"
}

instance_env() { # instance: exports the ports (and metrics directories) of that instance
  local name=$1 base shift upper
  base=$(inst_base "$name")
  shift=$(inst_shift "$name")
  ((shift != 0)) || return 0  # instance 1 of a service not behind HAProxy: its usual ports
  case $base in
    gate)
      export SKEIN_GATE_PORT=$((8080 + shift)) SKEIN_GATE_METRICS_PORT=$((9101 + shift))
      export SKEIN_GATE_METRICS_DIR=$RUN_DIR/metrics/$name ;;
    spool) export SKEIN_SPOOL_PORT=$((8081 + shift)) SKEIN_SPOOL_METRICS_DIR=$RUN_DIR/metrics/$name ;;
    control) export SKEIN_CONTROL_PORT=$((8082 + shift)) SKEIN_CONTROL_METRICS_PORT=$((9108 + shift)) ;;
    streamery) export SKEIN_STREAMERY_METRICS_PORT=$((9102 + shift)) ;;
    extractor) export SKEIN_EXTRACTOR_METRICS_PORT=$((9107 + shift)) ;;
    loaders.*)
      upper=${base#loaders.}
      upper=${upper^^}
      export "SKEIN_LOADER_${upper}_METRICS_PORT=$(($(base_port "$base") + shift))" ;;
  esac
}

svc_credentials() { # name: exports the credentials that service uses, and no env file
  export SKEIN_ENV_FILE=
  unset SKEIN_KAFKA_USERNAME SKEIN_KAFKA_PASSWORD SKEIN_S3_SECRET_KEY SKEIN_SPOOL_TOKEN
  SKEIN_CONTROL_DSN=$(control_dsn)
  export SKEIN_CONTROL_DSN
  if [[ $1 == gate || $1 == streamery ]]; then # their own Kafka principal
    SKEIN_KAFKA_USERNAME=$1
    SKEIN_KAFKA_PASSWORD=$(secret "kafka-$1")
    export SKEIN_KAFKA_USERNAME SKEIN_KAFKA_PASSWORD
  fi
  if [[ $1 != gate && $1 != extractor ]]; then # the batch path: S3 and the spool's API
    SKEIN_S3_SECRET_KEY=$(secret s3)
    SKEIN_SPOOL_TOKEN=$(secret spool-token)
    export SKEIN_S3_SECRET_KEY SKEIN_SPOOL_TOKEN
  fi
}

svc_start() { # name (one start of a service at a time: concurrent callers wait, then see it up)
  local lockfd
  exec {lockfd}>"$PIDS/$1.lock"
  flock "$lockfd"
  _svc_start "$1"
  local rc=$?
  exec {lockfd}>&-
  return $rc
}

_svc_start() {
  local name=$1 base port
  base=$(inst_base "$name")
  port=$(svc_port "$name")
  [[ -n $port ]] || die "unknown service $name"
  local job file
  job=$(prom_job "$base")
  file=$(prom_file "$name")
  if pid_alive "$PIDS/$name.pid"; then prom_target "$file" "$job" "127.0.0.1:$(scrape_port "$name" "$port")"; return 0; fi
  log "starting $name on 127.0.0.1:$port"
  (
    # The service must not inherit svc_start's lock (it would hold it for its whole life).
    if [[ -n ${lockfd:-} ]]; then exec {lockfd}>&-; fi
    cd "$ROOT"
    svc_credentials "$base"
    export SKEIN_GATE_METRICS_DIR=${SKEIN_GATE_METRICS_DIR:-$RUN_DIR/metrics/gate}
    export SKEIN_SPOOL_METRICS_DIR=${SKEIN_SPOOL_METRICS_DIR:-$RUN_DIR/metrics/spool}
    instance_env "$name"
    daemon "$PIDS/$name.pid" "$LOGS/$name.log" "$VENV/bin/python" -m "services.$base"
  )
  local deadline=$((SECONDS + 60))
  until curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do
    pid_alive "$PIDS/$name.pid" || die "$name exited during start (see $LOGS/$name.log)"
    ((SECONDS < deadline)) || die "$name not healthy within 60s (see $LOGS/$name.log)"
    sleep 0.2
  done
  prom_target "$file" "$job" "127.0.0.1:$(scrape_port "$name" "$port")"
}

svc_stop_one() { rm -f "$PROM_DIR/targets/$(prom_file "$1").json"; stop_pid "$PIDS/$1.pid" 40; }

svc_stop() { # instance, or a service: its every instance
  local name
  if [[ $1 == *@* ]]; then svc_stop_one "$1"; return; fi
  for name in $(instances "$1"); do svc_stop_one "$name"; done
}

svc_start_all() { # instance, or a service: its SCALE instances
  local i
  if [[ $1 == *@* ]]; then svc_start "$1"; return; fi
  for ((i = 1; i <= SCALE; i++)); do svc_start "$(inst_name "$1" "$i")"; done
}

at_once() { # command item...: `command item` for every item at the same time; fails if one did
  local cmd=$1 item pid rc=0 pids=()
  shift
  for item in "$@"; do "$cmd" "$item" & pids+=($!); done
  for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
  return $rc
}

# Instances start and stop at once, not one after another: each waits on its own health check
# or graceful exit, and a scale change or `up` takes about as long as the slowest instance.
# No service needs another to be up to start (each retries its dependencies).
svc_instances() { # service... -> the names of their running instances
  local base
  for base in "$@"; do instances "$base"; done
}

# ---------------------------------------------------------------- HAProxy (scaled profile)
haproxy_config() {
  mkdir -p "$HAPROXY_DIR"
  local base port i name
  {
    cat <<EOF
# Written by deploy/local/stack.sh (SKEIN_SCALE=$SCALE): the gate, the spool and the control
# service behind one address each. An instance is taken out while /readyz fails (checked every
# 500 ms) or while the rolling restart drains it; a request whose connection an instance refused
# is sent to another (retries, redispatch).
global
  stats socket $HAPROXY_DIR/admin.sock mode 600 level admin
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 120s
  timeout server 120s
  timeout http-request 30s
  option http-server-close
  option forwardfor  # the services see the client's address (the console's login limits)
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response response-timeout
  default-server inter 500ms fastinter 200ms fall 2 rise 1
EOF
    for base in "${PROXIED[@]}"; do
      port=$(base_port "$base")
      printf '\nfrontend %s\n  bind 127.0.0.1:%s\n  default_backend %s\n' "$base" "$port" "$base"
      printf 'backend %s\n  balance leastconn\n  option httpchk GET /readyz\n  http-check expect status 200\n' "$base"
      for ((i = 1; i <= SCALE; i++)); do
        name=$(inst_name "$base" "$i")
        printf '  server %s 127.0.0.1:%s check port %s\n' "${name/@/-}" "$(svc_port "$name")" "$(scrape_port "$name" "$(svc_port "$name")")"
      done
    done
  } >"$HAPROXY_DIR/haproxy.cfg.tmp"
  mv "$HAPROXY_DIR/haproxy.cfg.tmp" "$HAPROXY_DIR/haproxy.cfg"
}

haproxy_start() {
  ((SCALE > 1)) || return 0
  command -v haproxy >/dev/null || apt_install haproxy || die "HAProxy is needed for SKEIN_SCALE > 1 (apt-get install haproxy)"
  haproxy_config
  haproxy -c -q -f "$HAPROXY_DIR/haproxy.cfg" || die "bad HAProxy configuration $HAPROXY_DIR/haproxy.cfg"
  if pid_alive "$PIDS/haproxy.pid"; then kill -USR2 "$(cat "$PIDS/haproxy.pid")"; return 0; fi
  log "starting HAProxy on 127.0.0.1:8080, 8081, 8082 (SKEIN_SCALE=$SCALE)"
  daemon "$PIDS/haproxy.pid" "$LOGS/haproxy.log" haproxy -W -db -f "$HAPROXY_DIR/haproxy.cfg"
  local p
  for p in 8080 8081 8082; do wait_port "$p" 30 || die "HAProxy did not open $p (see $LOGS/haproxy.log)"; done
}

haproxy_stop() { stop_pid "$PIDS/haproxy.pid" 20; }

haproxy_cmd() { # runtime API command -> its answer
  python3 - "$HAPROXY_DIR/admin.sock" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
out = b""
while chunk := s.recv(65536):
    out += chunk
sys.stdout.write(out.decode())
PY
}

haproxy_server() { # instance -> backend/server as HAProxy names it
  echo "$(inst_base "$1")/${1/@/-}"
}

haproxy_field() { # instance field -> that server's field in `show stat` (scur, status...)
  local backend server=${1/@/-}
  backend=$(inst_base "$1")
  haproxy_cmd "show stat" | awk -F, -v b="$backend" -v s="$server" -v f="$2" '
    NR == 1 { for (i = 1; i <= NF; i++) if ($i == f || $i == "# " f) col = i; next }
    $1 == b && $2 == s { print $col }'
}

wait_ready() { # instance seconds: /readyz answers 200
  local name=$1 port deadline=$((SECONDS + $2))
  port=$(scrape_port "$name" "$(svc_port "$name")")
  until curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$name not ready within $2s (see $LOGS/$name.log)"
    sleep 0.2
  done
}

# ---------------------------------------------------------------- rolling restart, scale
restart_instance() { # instance: drain it (behind HAProxy), SIGTERM, wait, start, wait until ready
  local name=$1 base deadline
  base=$(inst_base "$name")
  if is_proxied "$base" && pid_alive "$PIDS/haproxy.pid"; then
    haproxy_cmd "set server $(haproxy_server "$name") state drain" >/dev/null
    deadline=$((SECONDS + 30))
    while [[ $(haproxy_field "$name" scur) != 0 ]] && ((SECONDS < deadline)); do sleep 0.1; done
  fi
  log "restarting $name"
  svc_stop_one "$name"
  svc_start "$name"
  wait_ready "$name" 60
  if is_proxied "$base" && pid_alive "$PIDS/haproxy.pid"; then
    haproxy_cmd "set server $(haproxy_server "$name") state ready" >/dev/null
    deadline=$((SECONDS + 30))
    until [[ $(haproxy_field "$name" status) == UP* ]]; do
      ((SECONDS < deadline)) || die "HAProxy does not see $name up again"
      sleep 0.1
    done
  fi
}

restart_service() { # service: its instances, one at a time
  local name
  for name in $(instances "$1"); do
    if pid_alive "$PIDS/$name.pid"; then restart_instance "$name"; fi
  done
}

cmd_rolling_restart() { # every service side by side, each one instance at a time
  local spec bases=()
  for spec in "${SERVICES[@]}"; do bases+=("${spec%%:*}"); done
  at_once restart_service "${bases[@]}" || die "the rolling restart did not finish (see $LOGS)"
  log "rolling restart done"
}

rescale() { # N: every Skein service to N instances, from the scale the stack last ran at
  local n=$1 old spec base name
  old=$(cat "$SCALE_FILE" 2>/dev/null || echo 1)
  # The proxied services change ports when HAProxy comes or goes: they restart.
  if (((n > 1) != (old > 1))); then
    at_once svc_stop_one $(svc_instances "${PROXIED[@]}")
    haproxy_stop
  fi
  SCALE=$n
  echo "$SCALE" >"$SCALE_FILE"
  local going=() coming=() i
  for spec in "${SERVICES[@]}"; do
    base=${spec%%:*}
    for name in $(instances "$base"); do
      (($(inst_index "$name") <= SCALE)) || going+=("$name")
    done
    for ((i = 1; i <= SCALE; i++)); do coming+=("$(inst_name "$base" "$i")"); done
  done
  at_once svc_stop_one "${going[@]}"
  haproxy_start
  at_once svc_start "${coming[@]}" || die "not every service started (see $LOGS)"
}

cmd_scale() { # N (proxied services move behind HAProxy or back)
  [[ $1 =~ ^[1-9]$ ]] || die "scale: N must be from 1 to 9"
  rescale "$1"
  log "every Skein service at $SCALE instance(s)"
}

# ---------------------------------------------------------------- commands
cmd_up() {
  local t0=$SECONDS
  ((${#UNKNOWN_LOADERS[@]} == 0)) || die "SKEIN_LOADERS: unknown warehouse type(s) ${UNKNOWN_LOADERS[*]} (${!LOADER_PORTS[*]})"
  ensure_prereqs
  tap_firewall
  secrets_up
  s3_start
  pg_up
  kafka_up
  prom_start
  s3_wait
  local n
  # A loader left from an earlier run that ended without `down` (crash, reboot) is no target.
  for n in "${!LOADER_PORTS[@]}"; do
    pid_alive "$PIDS/loaders.$n.pid" || rm -f "$PROM_DIR/targets/$(prom_job "loaders.$n").json"
  done
  # From whatever scale the last run left (its extra instances and HAProxy go, or come).
  rescale "$SCALE"
  log "ready in $((SECONDS - t0))s"
  cmd_endpoints
  (cd "$ROOT" && "$VENV/bin/python" deploy/local/demo.py "$RUN_DIR") || die "the demo request did not flow through"
}

cmd_endpoints() {
  cat <<EOF
Kafka        127.0.0.1:19092,127.0.0.1:29092,127.0.0.1:39092  topic $TOPIC (RF 3, min.insync.replicas 2, $PARTITIONS partitions)
             SASL/SCRAM-SHA-512 only; principals admin, gate, streamery (passwords in $SECRETS)
Control DB   postgresql://postgres@127.0.0.1:5432/skein       (password: $SECRETS/pg-control)
Warehouse    postgresql://postgres@127.0.0.1:5433/warehouse  (password: $SECRETS/pg-warehouse)
S3           http://127.0.0.1:8333  bucket $S3_BUCKET  (access key $S3_ACCESS_KEY, secret: $SECRETS/s3)
Secrets      $ENV_FILE (skein and the tests read it; psql: deploy/local/psql control|warehouse)
Gate         http://127.0.0.1:8080  (Import API v2; /metrics, /healthz, /readyz on :9101)
Control      http://127.0.0.1:8082  (management API, key from: .venv/bin/skein keys create --operator; /metrics on :9108)
Prometheus   http://127.0.0.1:9090  (alerts: deploy/prometheus/rules; dashboard: deploy/grafana)
Logs         $LOGS
EOF
}

cmd_down() {
  local n spec
  # Intake and the data path first, the spool and control last: a stopping streamery hands its
  # last batches to the spool.
  local loaders=()
  for n in "${!LOADER_PORTS[@]}"; do loaders+=("loaders.$n"); done
  at_once svc_stop_one $(svc_instances gate extractor streamery "${loaders[@]}")
  at_once svc_stop_one $(svc_instances spool control)
  haproxy_stop
  kafka_down
  s3_stop
  prom_stop
  for spec in "${PG_CLUSTERS[@]}"; do pg_stop "${spec%%:*}"; done
  log "stopped"
}

cmd_status() {
  local n bad=0 bin spec
  for n in 1 2 3; do
    if pid_alive "$PIDS/kafka-$n.pid"; then echo "kafka-$n     running (pid $(cat "$PIDS/kafka-$n.pid"))"; else echo "kafka-$n     stopped"; bad=1; fi
  done
  bin=$(pg_bin 2>/dev/null) || bin=""
  for spec in "${PG_CLUSTERS[@]}"; do
    if [[ -n $bin ]] && "${PG_USER_RUN[@]}" "$bin/pg_ctl" -D "$(pg_dir "${spec%%:*}")" status >/dev/null 2>&1; then
      echo "pg-${spec%%:*}  running (port $(cut -d: -f2 <<<"$spec"))"
    else echo "pg-${spec%%:*}  stopped"; bad=1; fi
  done
  if pid_alive "$PIDS/s3.pid"; then echo "s3          running (pid $(cat "$PIDS/s3.pid"))"; else echo "s3          stopped"; bad=1; fi
  if pid_alive "$PIDS/prometheus.pid"; then echo "prometheus  running (port 9090)"; else echo "prometheus  stopped"; bad=1; fi
  local i name
  for spec in "${SERVICES[@]}"; do
    for ((i = 1; i <= SCALE; i++)); do
      name=$(inst_name "${spec%%:*}" "$i")
      if pid_alive "$PIDS/$name.pid"; then printf '%-11s running (port %s)\n' "$name" "$(svc_port "$name")"; else printf '%-11s stopped\n' "$name"; bad=1; fi
    done
  done
  if ((SCALE > 1)); then
    if pid_alive "$PIDS/haproxy.pid"; then echo "haproxy     running (ports 8080, 8081, 8082)"; else echo "haproxy     stopped"; bad=1; fi
  fi
  for n in "${!LOADER_PORTS[@]}"; do # loaders started by name, outside SKEIN_LOADERS
    [[ " ${SERVICES[*]} " == *" loaders.$n:"* ]] && continue
    pid_alive "$PIDS/loaders.$n.pid" && printf '%-11s running (port %s)\n' "loaders.$n" "${LOADER_PORTS[$n]}"
  done
  if ((bad == 0)); then SKEIN_TOPIC=$TOPIC "$VENV/bin/skein" kafka status || bad=1; fi
  return $bad
}

cmd_logs() {
  local what=${1:-}
  case $what in
    "") tail -n 20 "$LOGS"/kafka-*/server.log "$LOGS"/pg-*.log "$LOGS"/s3.log 2>/dev/null ;;
    kafka-[123]) tail -n 100 -F "$LOGS/$what/server.log" ;;
    *) tail -n 100 -F "$LOGS/$what.log" ;;
  esac
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  logs) shift; cmd_logs "${1:-}" ;;
  endpoints) cmd_endpoints ;;
  kafka-fetch) kafka_fetch; jmx_fetch ;;
  kafka-start) secrets_up; kafka_fetch; jmx_fetch; kafka_start "$2"; wait_port "${2}9092" 90 ;;
  kafka-stop) kafka_stop "$2" ;;
  kafka-kill) kafka_kill "$2" ;;
  kafka-restart) secrets_up; kafka_down; kafka_up ;;
  s3-start) s3_start; s3_wait ;;
  start) svc_start_all "$2" ;;
  stop) svc_stop "$2" ;;
  rolling-restart) cmd_rolling_restart ;;
  scale) cmd_scale "$2" ;;
  s3-stop) s3_stop ;;
  prom-start) prom_start ;;
  prom-stop) prom_stop ;;
  pg-start) pg_start "$2" ;;
  pg-stop) pg_stop "$2" ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
