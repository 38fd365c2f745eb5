-- Every control-plane change: who (an OS user through the CLI, later an API key), what, when.
-- Written in the same transaction as the change it records; never holds a secret value.
CREATE TABLE audit_log (
    audit_id  bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text NOT NULL,
    action    text NOT NULL,
    client_id bigint,
    subject   text,
    details   jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_client ON audit_log (client_id, at);
CREATE INDEX audit_log_at ON audit_log (at);
