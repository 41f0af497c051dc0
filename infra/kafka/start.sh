#!/usr/bin/env bash
# Run a single-node Apache Kafka broker (KRaft, broker + controller in one JVM) in the foreground.
# Shared by `agl up` and the test fixtures. The log directory lives on disk, so topics and records survive a
# restart; the storage is formatted only the first time.
# Usage: start.sh LIBS_DIR DATA_DIR PORT CONTROLLER_PORT [HEAP [JVM_OPTIONS]]
set -euo pipefail
libs=${1:?usage: start.sh LIBS_DIR DATA_DIR PORT CONTROLLER_PORT [HEAP [JVM_OPTIONS]]}
data=${2:?DATA_DIR}
port=${3:?PORT}
cport=${4:?CONTROLLER_PORT}
heap=${5:-512m}
# Extra JVM options, split on blanks (AGL_KAFKA_JVM_OPTIONS); never globbed (set -f below).
jvm_options=${6:-}
here=$(cd "$(dirname "$0")" && pwd)
command -v java >/dev/null || { echo "java not found: install a JDK 17+ or use the Tansu broker" >&2; exit 127; }
"$here/fetch-jars.sh" "$libs"
mkdir -p "$data/logs"
props="$data/server.properties"
cat > "$props" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$data/logs
num.partitions=1
# Topics come from the registry in code, never from a typo in a producer.
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Large span batches: allow records up to 8 MiB.
message.max.bytes=8388608
PROPS
cp="$libs/*"
if [ ! -f "$data/logs/meta.properties" ]; then
  # A Kafka Uuid is 16 random bytes in URL-safe base64 without padding; making it here saves a JVM start.
  # One starting with '-' would be read as an option by the storage tool: draw again.
  cluster_id=-
  while [ "${cluster_id#-}" != "$cluster_id" ]; do
    cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
  done
  java -cp "$cp" kafka.tools.StorageTool format -t "$cluster_id" -c "$props" >/dev/null
fi
set -f
# shellcheck disable=SC2086 # the options are meant to split into words
exec java -Xms128m "-Xmx$heap" -XX:+UseSerialGC $jvm_options -Djava.awt.headless=true \
  "-Dlog4j2.configurationFile=$here/log4j2.properties" -cp "$cp" kafka.Kafka "$props"
