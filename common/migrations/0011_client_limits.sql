-- Per-client quotas (NULL: the gate's default; docs/architecture.md, "The tenant boundary"),
-- beside clients.rate_limit_rps (0002), and the registry of each client's tables that the
-- distinct-tables quota counts. The gate adds a table on first sight; the spool's retention
-- removes tables idle past it.
ALTER TABLE clients
    ADD COLUMN max_tables integer CHECK (max_tables > 0),
    ADD COLUMN bytes_per_s bigint CHECK (bytes_per_s > 0),
    ADD COLUMN max_concurrent_requests integer CHECK (max_concurrent_requests > 0);

CREATE TABLE client_tables (
    client_id  bigint NOT NULL REFERENCES clients,
    table_name text NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, table_name)
);
