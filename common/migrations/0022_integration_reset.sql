-- `skein integrations reset NAME [--stream S]`: the bookmark of the stream (or of all) is
-- cleared, and runs re-extract it under a new table version until one succeeds; that run's
-- end activates the version (the table swapped in whole). NULL reset_streams: every stream.
ALTER TABLE integrations ADD COLUMN reset_requested_at timestamptz;
ALTER TABLE integrations ADD COLUMN reset_streams text[];
