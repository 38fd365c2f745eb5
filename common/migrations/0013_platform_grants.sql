-- What a client may do with the platform's own credentials, as an operator allowed it
-- (docs/architecture.md, "The tenant boundary"): a BigQuery project loaded with the platform's
-- Application Default Credentials, a Redshift IAM role the platform's staging and COPY use, an
-- S3 endpoint other than AWS's for Redshift staging. Anything not listed is refused.
CREATE TABLE platform_grants (
    client_id  bigint NOT NULL REFERENCES clients,
    kind       text NOT NULL CHECK (kind IN ('bigquery_project', 'redshift_role', 's3_endpoint')),
    value      text NOT NULL CHECK (length(value) BETWEEN 1 AND 2048),
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, kind, value)
);
