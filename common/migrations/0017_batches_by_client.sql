-- The control API lists a client's batches by id, a page at a time (keyset on batch_id).
CREATE INDEX batches_client_batch ON batches (client_id, batch_id);
