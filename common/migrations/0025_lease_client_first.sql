-- Leasing walks clients first (docs/architecture.md, "Spool: fairness"). The order is the
-- one 0009 set: clients holding fewer live leases first, then the client served least
-- recently, then the oldest data; within a client, its table with the oldest head batch.
-- 0009 ranked every ready (client, table) pair on each lease, looking up each table's head
-- batch, so a lease cost grew with the number of ready tables: ~2.7 ms of the control
-- database's CPU per lease with 300 small tables waiting, most of a small batch's cost there.
-- Here the ready clients are ranked (one pass over the ready batches, grouped by client) and
-- a client's tables are looked at only when its turn comes, which is almost always the first
-- client's: a lease costs about the same with 3 or 300 tables ready, as long as the first
-- clients have a free table (each client passed over costs one indexed query). Clients rank
-- by the oldest of their ready batches (0009: the oldest head of a leasable table). Clients
-- whose every table is blocked (a dead or leased head) are passed over, as before.
--
-- A lease may hold several tables of its client (p_max_tables): the next ones in the same
-- order, all under one token, up to the lease's batch and byte budget. With many small tables
-- a loader then ranks, leases and acknowledges once for several loads
-- (spool_acks_and_lease). A client's live leases are counted as leases (distinct tokens), not
-- as tables, so one lease of three tables is one of its max_per_client.
--
-- The lease also names its client's destination version itself (0020 wrapped every lease in
-- spool_versioned, a second JSON rewrite and lookup per call), and the spool's functions run
-- on generic plans: Postgres kept re-planning several of their statements on every call
-- (custom plans), ~2 ms of the control database's CPU per loaded batch.

CREATE FUNCTION spool_lease(
    p_destination_type text,
    p_owner text,
    p_lease_seconds integer,
    p_max_batches integer,
    p_max_bytes bigint,
    p_candidates integer,
    p_max_per_client integer,
    p_max_tables integer
) RETURNS jsonb
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    cl record;
    cand record;
    b record;
    took bigint[];
    size bigint;
    token uuid;
    expires timestamptz;
    leased jsonb;
    tables jsonb;
    total_batches integer;
    total_bytes bigint;
    live integer;
    tried integer := 0;  -- tables tried, at most p_candidates
BEGIN
    FOR cl IN
        WITH ready AS (
            SELECT client_id, min(oldest_received_at) AS oldest FROM batches
            WHERE destination_type = p_destination_type
              AND state IN ('pending', 'retry_wait') AND next_attempt_at <= now()
            GROUP BY client_id
        ), busy AS (
            SELECT l.client_id, count(DISTINCT l.lease_token) AS live FROM table_leases l
            WHERE l.expires_at > now() AND l.destination_type = p_destination_type
              AND l.client_id IN (SELECT client_id FROM ready)
            GROUP BY l.client_id
        )
        SELECT r.client_id
        FROM ready r
        LEFT JOIN busy ON busy.client_id = r.client_id
        LEFT JOIN client_turns t
               ON t.client_id = r.client_id AND t.destination_type = p_destination_type
        WHERE coalesce(busy.live, 0) < p_max_per_client
        ORDER BY coalesce(busy.live, 0), t.served_at NULLS FIRST, r.oldest, r.client_id
    LOOP
        token := NULL;
        tables := '[]';
        total_batches := 0;
        total_bytes := 0;
        FOR cand IN
            SELECT r.table_name
            FROM (
                SELECT DISTINCT table_name FROM batches
                WHERE client_id = cl.client_id AND destination_type = p_destination_type
                  AND state IN ('pending', 'retry_wait') AND next_attempt_at <= now()
            ) r
            JOIN table_leases l ON l.client_id = cl.client_id AND l.table_name = r.table_name
            CROSS JOIN LATERAL (
                SELECT h.state, h.next_attempt_at, h.oldest_received_at, h.destination_type
                FROM batches h
                WHERE h.client_id = cl.client_id AND h.table_name = r.table_name
                  AND h.state IN ('pending', 'leased', 'retry_wait', 'dead')
                ORDER BY h.partition, h.first_offset
                LIMIT 1
            ) head
            WHERE (l.expires_at IS NULL OR l.expires_at <= now())
              AND head.destination_type = p_destination_type
              AND head.state IN ('pending', 'retry_wait') AND head.next_attempt_at <= now()
            ORDER BY head.oldest_received_at, r.table_name
            LIMIT greatest(p_candidates - tried, 0)
        LOOP
            tried := tried + 1;
            -- Another leaser may hold (or have just taken) this table: skip it, never wait.
            PERFORM 1 FROM table_leases
            WHERE client_id = cl.client_id AND table_name = cand.table_name
              AND (expires_at IS NULL OR expires_at <= now())
            FOR UPDATE SKIP LOCKED;
            CONTINUE WHEN NOT FOUND;

            IF token IS NULL THEN
                -- The cap, counted under the client's turn lock (its other leasers wait here
                -- briefly); at the cap, the next client.
                INSERT INTO client_turns (client_id, destination_type)
                VALUES (cl.client_id, p_destination_type) ON CONFLICT DO NOTHING;
                PERFORM 1 FROM client_turns
                WHERE client_id = cl.client_id AND destination_type = p_destination_type
                FOR UPDATE;
                SELECT count(DISTINCT lease_token) INTO live FROM table_leases
                WHERE client_id = cl.client_id AND destination_type = p_destination_type
                  AND expires_at > now();
                EXIT WHEN live >= p_max_per_client;
            END IF;

            took := '{}';
            size := 0;
            FOR b IN
                SELECT batch_id, state, next_attempt_at <= now() AS due, bytes FROM batches
                WHERE client_id = cl.client_id AND table_name = cand.table_name
                  AND state IN ('pending', 'leased', 'retry_wait', 'dead')
                ORDER BY partition, first_offset
                LIMIT p_max_batches - total_batches
            LOOP
                -- Order: nothing after a batch that cannot go now.
                EXIT WHEN b.state NOT IN ('pending', 'retry_wait') OR NOT b.due;
                EXIT WHEN total_batches + cardinality(took) > 0
                      AND total_bytes + size + b.bytes > p_max_bytes;
                took := took || b.batch_id;
                size := size + b.bytes;
            END LOOP;
            CONTINUE WHEN cardinality(took) = 0;

            IF token IS NULL THEN
                token := gen_random_uuid();
                expires := now() + make_interval(secs => p_lease_seconds);
                UPDATE client_turns SET served_at = clock_timestamp()
                WHERE client_id = cl.client_id AND destination_type = p_destination_type;
            END IF;
            UPDATE table_leases
            SET lease_token = token, lease_owner = p_owner,
                destination_type = p_destination_type, expires_at = expires
            WHERE client_id = cl.client_id AND table_name = cand.table_name;

            WITH upd AS (
                UPDATE batches
                SET state = 'leased', lease_token = token, lease_owner = p_owner,
                    lease_expires_at = expires, attempts = attempts + 1, updated_at = now()
                WHERE batch_id = ANY (took)
                RETURNING batch_id, object_key, partition, first_offset, last_offset,
                          record_count, bytes, oldest_received_at, attempts
            )
            SELECT jsonb_agg(
                       jsonb_build_object(
                           'batch_id', batch_id, 'object_key', object_key,
                           'partition', partition, 'first_offset', first_offset,
                           'last_offset', last_offset, 'record_count', record_count,
                           'bytes', bytes, 'oldest_received_at', oldest_received_at,
                           'attempts', attempts)
                       ORDER BY partition, first_offset)
            INTO leased FROM upd;

            tables := tables || jsonb_build_array(
                jsonb_build_object('table_name', cand.table_name, 'batches', leased));
            total_batches := total_batches + cardinality(took);
            total_bytes := total_bytes + size;
            EXIT WHEN jsonb_array_length(tables) >= p_max_tables
                   OR total_batches >= p_max_batches OR total_bytes >= p_max_bytes;
        END LOOP;

        IF token IS NOT NULL THEN
            RETURN jsonb_build_object(
                'lease_token', token, 'client_id', cl.client_id,
                'table_name', tables -> 0 ->> 'table_name',
                'destination_type', p_destination_type, 'expires_at', expires,
                'batches', tables -> 0 -> 'batches',
                'more', tables - 0,
                'destination_version', (
                    SELECT floor(extract(epoch FROM updated_at) * 1000000)::bigint
                    FROM destinations WHERE client_id = cl.client_id));
        END IF;
        EXIT WHEN tried >= p_candidates;
    END LOOP;
    RETURN NULL;
END
$$;

-- 0009's signature: one table.
CREATE OR REPLACE FUNCTION spool_lease(
    p_destination_type text,
    p_owner text,
    p_lease_seconds integer,
    p_max_batches integer,
    p_max_bytes bigint,
    p_candidates integer,
    p_max_per_client integer
) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT spool_lease(p_destination_type, p_owner, p_lease_seconds, p_max_batches, p_max_bytes,
                       p_candidates, p_max_per_client, 1)
$$;

-- A loader's cycle over a lease of several tables, in one call: each table's ack with its own
-- report (its hooks' events and schema log, as a one-table ack), then, with p_destination_type
-- set, the next lease. An ack answering an error (a stale token) stops there and is returned:
-- acks before it stand (their loads committed).
CREATE FUNCTION spool_acks_and_lease(
    p_token uuid,
    p_acks jsonb,
    p_destination_type text,
    p_owner text,
    p_lease_seconds integer,
    p_max_batches integer,
    p_max_bytes bigint,
    p_candidates integer,
    p_max_per_client integer,
    p_max_tables integer
) RETURNS jsonb
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    one jsonb;
    acked jsonb;
    total integer := 0;
BEGIN
    FOR one IN SELECT value FROM jsonb_array_elements(p_acks) WITH ORDINALITY ORDER BY ordinality
    LOOP
        acked := spool_ack(
            p_token,
            ARRAY(SELECT jsonb_array_elements_text(one -> 'batch_ids'))::bigint[],
            nullif(one -> 'report', 'null'::jsonb));  -- no report: no hook events
        IF acked ? 'error' THEN
            RETURN acked;
        END IF;
        total := total + (acked ->> 'acked')::integer;
    END LOOP;
    IF p_destination_type IS NULL THEN
        RETURN jsonb_build_object('acked', total, 'next', NULL);
    END IF;
    RETURN jsonb_build_object('acked', total, 'next', spool_lease(
        p_destination_type, p_owner, p_lease_seconds, p_max_batches, p_max_bytes, p_candidates,
        p_max_per_client, p_max_tables));
END
$$;

-- The one-table cycle leases as many tables as asked, too.
CREATE FUNCTION spool_ack_and_lease(
    p_token uuid,
    p_batch_ids bigint[],
    p_destination_type text,
    p_owner text,
    p_lease_seconds integer,
    p_max_batches integer,
    p_max_bytes bigint,
    p_candidates integer,
    p_max_per_client integer,
    p_report jsonb,
    p_max_tables integer
) RETURNS jsonb
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    acked jsonb;
BEGIN
    acked := spool_ack(p_token, p_batch_ids, p_report);
    IF acked ? 'error' THEN
        RETURN acked;
    END IF;
    RETURN acked || jsonb_build_object('next', spool_lease(
        p_destination_type, p_owner, p_lease_seconds, p_max_batches, p_max_bytes, p_candidates,
        p_max_per_client, p_max_tables));
END
$$;

-- 0018's signature: the one definition above, one table.
CREATE OR REPLACE FUNCTION spool_ack_and_lease(
    p_token uuid,
    p_batch_ids bigint[],
    p_destination_type text,
    p_owner text,
    p_lease_seconds integer,
    p_max_batches integer,
    p_max_bytes bigint,
    p_candidates integer,
    p_max_per_client integer,
    p_report jsonb
) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT spool_ack_and_lease(p_token, p_batch_ids, p_destination_type, p_owner,
                               p_lease_seconds, p_max_batches, p_max_bytes, p_candidates,
                               p_max_per_client, p_report, 1)
$$;

ALTER FUNCTION spool_ack(uuid, bigint[]) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION spool_ack(uuid, bigint[], jsonb) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION hook_emit(bigint, text, jsonb) SET plan_cache_mode = force_generic_plan;
