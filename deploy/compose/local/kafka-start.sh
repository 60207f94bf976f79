#!/bin/sh
# KAFKA_* environment -> /etc/kafka/server.properties (as the apache/kafka image does), format
# the KRaft storage once, run the broker.
set -eu
props=/etc/kafka/server.properties
: >"$props"
env | grep '^KAFKA_' | grep -v '^KAFKA_HEAP_OPTS=' | while IFS='=' read -r name value; do
  key="$(printf '%s' "${name#KAFKA_}" | tr 'A-Z_' 'a-z.')"
  printf '%s=%s\n' "$key" "$value" >>"$props"
done
grep -q '^log.dirs=' "$props" || echo 'log.dirs=/var/lib/kafka/data' >>"$props"
cp="/opt/kafka/lib/*"
if [ ! -f /var/lib/kafka/data/meta.properties ]; then
  java -cp "$cp" kafka.tools.StorageTool format --standalone -t "${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}" -c "$props" ||
    java -cp "$cp" kafka.tools.StorageTool format -t "${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}" -c "$props"
fi
exec java ${KAFKA_HEAP_OPTS:--Xmx512m} -cp "$cp" kafka.Kafka "$props"
