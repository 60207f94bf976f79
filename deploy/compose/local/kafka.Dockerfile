# Kafka (KRaft) from the Debian base and the jars deploy/local/kafka.sh cached; configured
# like apache/kafka: KAFKA_FOO_BAR=x becomes foo.bar=x in server.properties.
ARG BASE
FROM ${BASE}
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 1000 appuser && useradd --system --uid 1000 --gid 1000 appuser \
    && mkdir -p /opt/kafka/bin /var/lib/kafka/data /etc/kafka && chown -R 1000:1000 /var/lib/kafka /etc/kafka
COPY lib /opt/kafka/lib
COPY kafka-start.sh /opt/kafka/bin/kafka-start.sh
RUN printf '#!/bin/sh\nexec java -Xmx128m -cp "/opt/kafka/lib/*" org.apache.kafka.tools.BrokerApiVersionsCommand "$@"\n' \
      >/opt/kafka/bin/kafka-broker-api-versions.sh \
    && chmod 0755 /opt/kafka/bin/*.sh
USER 1000:1000
ENTRYPOINT ["/opt/kafka/bin/kafka-start.sh"]
