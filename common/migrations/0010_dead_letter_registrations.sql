-- A batch the spool refuses to register (its client does not exist: a forged or stale message)
-- is kept as a dead row with the reason, so the streamery can commit past it and consumption
-- goes on for every other client. Such a row names a client_id that clients does not hold, so
-- batches no longer references clients (the spool checks a client exists at registration).
ALTER TABLE batches DROP CONSTRAINT batches_client_id_fkey;
