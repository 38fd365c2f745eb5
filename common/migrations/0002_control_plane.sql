-- The control plane: who may send (API and webhook tokens), how fast, and where it loads.

-- Per-client override of the gate's request rate limit; NULL means the gate's default.
ALTER TABLE clients ADD COLUMN rate_limit_rps integer CHECK (rate_limit_rps > 0);

-- Import API tokens. Only the SHA-256 of a token is kept; the token itself is shown once.
CREATE TABLE api_tokens (
    token_id     bigserial PRIMARY KEY,
    client_id    bigint NOT NULL REFERENCES clients,
    token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    token_prefix text NOT NULL,  -- the token's first 8 characters, for operators to recognise it
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX api_tokens_client_id ON api_tokens (client_id);

-- Webhook endpoints: the token is in the URL; records land in one table of the client.
CREATE TABLE webhooks (
    webhook_id   bigserial PRIMARY KEY,
    client_id    bigint NOT NULL REFERENCES clients,
    token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    token_prefix text NOT NULL,
    table_name   text NOT NULL DEFAULT 'data' CHECK (length(table_name) BETWEEN 1 AND 255),
    key_field    text CHECK (length(key_field) BETWEEN 1 AND 255),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX webhooks_client_id ON webhooks (client_id);

-- One warehouse per client. Secret settings are an encrypted JSON object (SKEIN_SECRET_KEY).
CREATE TABLE destinations (
    client_id  bigint PRIMARY KEY REFERENCES clients,
    type       text NOT NULL CHECK (type IN ('postgres', 'redshift', 'bigquery', 'snowflake')),
    config     jsonb NOT NULL CHECK (jsonb_typeof(config) = 'object'),
    secrets    bytea,
    updated_at timestamptz NOT NULL DEFAULT now()
);
