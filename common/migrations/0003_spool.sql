-- The spool: batches waiting to load, their leases, and the streamery's duplicate guard.

CREATE TABLE batches (
    batch_id           bigserial PRIMARY KEY,
    client_id          bigint NOT NULL REFERENCES clients,
    -- Resolved from the client's destination at registration (or, if none yet, when one is set).
    destination_type   text CHECK (destination_type IN ('postgres', 'redshift', 'bigquery', 'snowflake')),
    table_name         text NOT NULL,
    object_key         text NOT NULL UNIQUE,
    partition          integer NOT NULL CHECK (partition >= 0),
    first_offset       bigint NOT NULL CHECK (first_offset >= 0),
    last_offset        bigint NOT NULL CHECK (last_offset >= first_offset),
    record_count       integer NOT NULL CHECK (record_count >= 0),
    bytes              bigint NOT NULL CHECK (bytes >= 0),
    oldest_received_at timestamptz NOT NULL,
    newest_received_at timestamptz NOT NULL,
    request_ids        text[] NOT NULL DEFAULT '{}',
    state              text NOT NULL DEFAULT 'pending'
                       CHECK (state IN ('pending', 'leased', 'retry_wait', 'loaded', 'dead', 'skipped')),
    attempts           integer NOT NULL DEFAULT 0,
    lease_owner        text,
    lease_token        uuid,
    lease_expires_at   timestamptz,
    next_attempt_at    timestamptz NOT NULL DEFAULT now(),
    first_failed_at    timestamptz,  -- start of the current run of transient failures
    last_error         text,
    last_error_kind    text CHECK (last_error_kind IN ('transient', 'permanent')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    loaded_at          timestamptz
);
-- Load order of one table: Kafka order (one table stays in one partition). The partial index
-- finds a table's head (first batch not yet loaded or skipped) in one probe, however long its
-- history of loaded batches.
CREATE INDEX batches_table_order ON batches (client_id, table_name, partition, first_offset);
CREATE INDEX batches_open_order ON batches (client_id, table_name, partition, first_offset)
    WHERE state IN ('pending', 'leased', 'retry_wait', 'dead');
CREATE INDEX batches_ready ON batches (destination_type, next_attempt_at)
    WHERE state IN ('pending', 'retry_wait');
CREATE INDEX batches_leased ON batches (lease_token) WHERE state = 'leased';
CREATE INDEX batches_unresolved ON batches (client_id) WHERE destination_type IS NULL;
CREATE INDEX batches_open_state ON batches (state) WHERE state NOT IN ('loaded', 'skipped');

-- One row per (client, table): the row lock serialises leasing, and a live lease here means
-- nobody else may lease that table.
CREATE TABLE table_leases (
    client_id    bigint NOT NULL REFERENCES clients,
    table_name   text NOT NULL,
    lease_token  uuid,
    lease_owner  text,
    expires_at   timestamptz,
    PRIMARY KEY (client_id, table_name)
);

-- Highest Kafka offset registered per (partition, client, table): a re-read skips at or below it.
CREATE TABLE high_water (
    partition   integer NOT NULL,
    client_id   bigint NOT NULL,
    table_name  text NOT NULL,
    last_offset bigint NOT NULL,
    PRIMARY KEY (partition, client_id, table_name)
);
