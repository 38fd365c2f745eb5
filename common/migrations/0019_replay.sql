-- Replay (docs/architecture.md, "Replay"): a loaded batch's retained object is enqueued again
-- as a new batch row that names the original (replay_of). An object key is unique among
-- original batches only; purging keeps an object while a replay of it still waits.

ALTER TABLE batches ADD COLUMN replay_of bigint REFERENCES batches;
ALTER TABLE batches DROP CONSTRAINT batches_object_key_key;
CREATE UNIQUE INDEX batches_object_key ON batches (object_key) WHERE replay_of IS NULL;
CREATE INDEX batches_replays ON batches (object_key) WHERE replay_of IS NOT NULL;
