#!/usr/bin/env bash
# docker-compose's kafka-N-format: formats node $NODE_ID's storage once, with the SCRAM-SHA-512
# users (broker, admin, gate, streamery) bootstrapped into its metadata, before the node starts
# (the image's own start then finds it formatted). Same users as deploy/local/stack.sh.
set -euo pipefail
cat >/tmp/format.properties <<PROPS
process.roles=broker,controller
node.id=$NODE_ID
controller.quorum.voters=$KAFKA_CONTROLLER_QUORUM_VOTERS
controller.listener.names=CONTROLLER
listeners=INTERNAL://:9092,CONTROLLER://:${NODE_ID}9093
listener.security.protocol.map=INTERNAL:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
inter.broker.listener.name=INTERNAL
log.dirs=/var/lib/kafka/data
PROPS
exec /opt/kafka/bin/kafka-storage.sh format --ignore-formatted -t "$CLUSTER_ID" -c /tmp/format.properties \
  --add-scram "SCRAM-SHA-512=[name=broker,password=$SKEIN_KAFKA_BROKER_PASSWORD]" \
  --add-scram "SCRAM-SHA-512=[name=admin,password=$SKEIN_KAFKA_ADMIN_PASSWORD]" \
  --add-scram "SCRAM-SHA-512=[name=gate,password=$SKEIN_KAFKA_GATE_PASSWORD]" \
  --add-scram "SCRAM-SHA-512=[name=streamery,password=$SKEIN_KAFKA_STREAMERY_PASSWORD]"
