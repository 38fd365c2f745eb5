-- Keys of the control service's HTTP API (services/control): an operator key (client_id NULL)
-- acts on every client, a client key on its own client only. Stored as SHA-256 of the key,
-- like the Import API tokens; the key itself is shown once, when created.
CREATE TABLE api_keys (
    key_id     bigserial PRIMARY KEY,
    client_id  bigint REFERENCES clients (client_id) ON DELETE CASCADE,
    name       text NOT NULL DEFAULT '',
    key_hash   bytea NOT NULL UNIQUE,
    key_prefix text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX api_keys_client ON api_keys (client_id);
