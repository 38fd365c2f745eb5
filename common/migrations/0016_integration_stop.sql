-- A request to stop an integration's running run (the control API's DELETE
-- /v4/sources/{id}/sync): the extractor running it cancels it on its next tick (the next run
-- resumes from the saved state). Cleared when a run starts or ends.
ALTER TABLE integrations ADD COLUMN stop_requested_at timestamptz;
