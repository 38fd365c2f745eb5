-- An ack or an extension finds its table's lease row by token: without an index that was a
-- scan of every (client, table) the spool has ever seen, so each lease + ack cycle cost more
-- the more tables sat idle (bench/spool_bench.py --idle-tables: 273 -> 4 cycles/s at 100,000).
CREATE INDEX table_leases_token ON table_leases (lease_token) WHERE lease_token IS NOT NULL;
