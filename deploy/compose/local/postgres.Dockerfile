# PostgreSQL 15 from Debian, started like the postgres image: POSTGRES_USER, POSTGRES_PASSWORD,
# POSTGRES_DB and /docker-entrypoint-initdb.d/*.sql on an empty data directory.
ARG BASE
FROM ${BASE}
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /docker-entrypoint-initdb.d /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY postgres-start.sh /usr/local/bin/postgres-start.sh
USER postgres
ENTRYPOINT ["sh", "/usr/local/bin/postgres-start.sh"]
