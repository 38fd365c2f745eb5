-- Retention: a loaded batch's S3 object is deleted once it has been loaded longer than
-- SKEIN_SPOOL_RETENTION_DAYS (spool housekeeping or `skein spool purge`); the row stays, marked.
ALTER TABLE batches ADD COLUMN purged_at timestamptz;
CREATE INDEX batches_purgeable ON batches (updated_at) WHERE state = 'loaded' AND purged_at IS NULL;
