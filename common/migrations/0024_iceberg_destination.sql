-- A fifth destination type: Apache Iceberg tables (services/loaders/iceberg/).
ALTER TABLE destinations DROP CONSTRAINT destinations_type_check;
ALTER TABLE destinations ADD CONSTRAINT destinations_type_check
    CHECK (type IN ('postgres', 'redshift', 'bigquery', 'snowflake', 'iceberg'));
ALTER TABLE batches DROP CONSTRAINT batches_destination_type_check;
ALTER TABLE batches ADD CONSTRAINT batches_destination_type_check
    CHECK (destination_type IN ('postgres', 'redshift', 'bigquery', 'snowflake', 'iceberg'));
