-- Scheduled extraction (services/extractor/): each client's Singer tap integrations and their runs.

CREATE TABLE integrations (
    integration_id       bigserial PRIMARY KEY,
    client_id            bigint NOT NULL REFERENCES clients,
    -- Operators name integrations in the CLI (`skein integrations run NAME`): unique overall.
    name                 text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$'),
    tap_package          text NOT NULL,  -- PyPI distribution, e.g. meltanolabs-tap-postgres
    tap_version          text NOT NULL,  -- the version installed and discovered with
    tap_executable       text NOT NULL,  -- its console script
    -- The tap's whole config and the client's API token, as one Fernet-encrypted JSON object
    -- (SKEIN_SECRET_KEY): {"config": {...}, "token": "skn_..."}. config_keys and secret_keys
    -- name what is inside (secret_keys: the values redacted from the tap's stderr).
    sealed               bytea NOT NULL,
    config_keys          text[] NOT NULL DEFAULT '{}',
    secret_keys          text[] NOT NULL DEFAULT '{}',
    token_id             bigint REFERENCES api_tokens,
    catalog              jsonb NOT NULL,  -- discovered, with the chosen streams selected
    schedule             text NOT NULL,   -- cron expression, UTC
    paused               boolean NOT NULL DEFAULT false,
    state                jsonb,           -- last saved Singer STATE (every record before it got a 2xx)
    state_saved_at       timestamptz,
    next_run_at          timestamptz NOT NULL,
    run_requested_at     timestamptz,     -- `skein integrations run NAME`
    consecutive_failures integer NOT NULL DEFAULT 0,
    last_success_at      timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX integrations_client_id ON integrations (client_id);
CREATE INDEX integrations_due ON integrations (next_run_at) WHERE NOT paused;

CREATE TABLE integration_runs (
    run_id          bigserial PRIMARY KEY,
    integration_id  bigint NOT NULL REFERENCES integrations ON DELETE CASCADE,
    trigger         text NOT NULL CHECK (trigger IN ('schedule', 'manual', 'retry')),
    status          text NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'succeeded', 'failed')),
    owner           text NOT NULL,  -- host:pid of the extractor that ran it
    started_at      timestamptz NOT NULL DEFAULT now(),
    ended_at        timestamptz,
    records         jsonb NOT NULL DEFAULT '{}',  -- stream -> records acknowledged by the gate
    states_saved    integer NOT NULL DEFAULT 0,
    error           text,
    stderr          text  -- the tap's stderr (its tail), secrets redacted
);
CREATE INDEX integration_runs_by_integration ON integration_runs (integration_id, run_id DESC);
CREATE INDEX integration_runs_running ON integration_runs (integration_id) WHERE status = 'running';
