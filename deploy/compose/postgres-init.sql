-- Run once by the postgres image on an empty data volume (docker-compose.yml):
-- the audit trail uses POSTGRES_DB (loopwise_audit); the review console gets its own database.
CREATE DATABASE loopwise_console OWNER loopwise;
