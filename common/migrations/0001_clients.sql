-- Tenants. Every token, webhook, destination, batch and metric label carries a client id.
CREATE TABLE clients (
    client_id  bigserial PRIMARY KEY,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);
