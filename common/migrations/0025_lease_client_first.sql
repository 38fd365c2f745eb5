-- Leasing walks clients first (docs/architecture.md, "Spool: fairness"). The order is the
-- one 0009 set: clients holding fewer live leases first, then the client served least
-- recently, then the oldest data; within a client, its table with the oldest head batch.
-- 0009 ranked every ready (client, table) pair on each lease, looking up each table's head
-- batch, so a lease cost grew with the number of ready tables: ~2.7 ms of the control
-- database's CPU per lease with 300 small tables waiting, most of a small batch's cost there.
-- Here the ready clients are ranked (one pass over the ready batches, grouped by client) and
-- a client's tables are looked at only when its turn comes, which is almost always the first
-- client's: a lease costs about the same with 3 or 300 tables ready. Clients whose every
-- table is blocked (a dead or leased head) are passed over, as before.
--
-- The lease also names its client's destination version itself (0020 wrapped every lease in
-- spool_versioned, a second JSON rewrite and lookup per call), and the spool's functions run
-- on generic plans: Postgres kept re-planning several of their statements on every call
-- (custom plans), ~2 ms of the control database's CPU per loaded batch.

CREATE OR REPLACE FUNCTION spool_lease(
    p_destination_type text,
    p_owner text,
    p_lease_seconds integer,
    p_max_batches integer,
    p_max_bytes bigint,
    p_candidates integer,
    p_max_per_client integer
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
            SELECT l.client_id, count(*) AS live FROM table_leases l
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
            LIMIT p_candidates - tried
        LOOP
            tried := tried + 1;
            -- Another leaser may hold (or have just taken) this table: skip it, never wait.
            PERFORM 1 FROM table_leases
            WHERE client_id = cl.client_id AND table_name = cand.table_name
              AND (expires_at IS NULL OR expires_at <= now())
            FOR UPDATE SKIP LOCKED;
            CONTINUE WHEN NOT FOUND;

            -- The cap, counted under the client's turn lock (its other leasers wait here
            -- briefly); at the cap, the next client.
            INSERT INTO client_turns (client_id, destination_type)
            VALUES (cl.client_id, p_destination_type) ON CONFLICT DO NOTHING;
            PERFORM 1 FROM client_turns
            WHERE client_id = cl.client_id AND destination_type = p_destination_type FOR UPDATE;
            SELECT count(*) INTO live FROM table_leases
            WHERE client_id = cl.client_id AND destination_type = p_destination_type
              AND expires_at > now();
            EXIT WHEN live >= p_max_per_client;

            took := '{}';
            size := 0;
            FOR b IN
                SELECT batch_id, state, next_attempt_at <= now() AS due, bytes FROM batches
                WHERE client_id = cl.client_id AND table_name = cand.table_name
                  AND state IN ('pending', 'leased', 'retry_wait', 'dead')
                ORDER BY partition, first_offset
                LIMIT p_max_batches
            LOOP
                -- Order: nothing after a batch that cannot go now.
                EXIT WHEN b.state NOT IN ('pending', 'retry_wait') OR NOT b.due;
                EXIT WHEN cardinality(took) > 0 AND size + b.bytes > p_max_bytes;
                took := took || b.batch_id;
                size := size + b.bytes;
            END LOOP;
            CONTINUE WHEN cardinality(took) = 0;

            token := gen_random_uuid();
            UPDATE table_leases
            SET lease_token = token, lease_owner = p_owner,
                destination_type = p_destination_type,
                expires_at = now() + make_interval(secs => p_lease_seconds)
            WHERE client_id = cl.client_id AND table_name = cand.table_name
            RETURNING expires_at INTO expires;

            UPDATE client_turns SET served_at = clock_timestamp()
            WHERE client_id = cl.client_id AND destination_type = p_destination_type;

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

            RETURN jsonb_build_object(
                'lease_token', token, 'client_id', cl.client_id, 'table_name', cand.table_name,
                'destination_type', p_destination_type, 'expires_at', expires,
                'batches', leased,
                'destination_version', (
                    SELECT floor(extract(epoch FROM updated_at) * 1000000)::bigint
                    FROM destinations WHERE client_id = cl.client_id));
        END LOOP;
        EXIT WHEN tried >= p_candidates;
    END LOOP;
    RETURN NULL;
END
$$;

ALTER FUNCTION spool_ack(uuid, bigint[]) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION spool_ack(uuid, bigint[], jsonb) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION spool_ack_and_lease(uuid, bigint[], text, text, integer, integer, bigint, integer,
                                   integer, jsonb) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION hook_emit(bigint, text, jsonb) SET plan_cache_mode = force_generic_plan;
