-- The spool's lease and ack as server-side functions: one round trip each instead of six or
-- seven statements from Python (the loaders' ack-and-lease cycle is the spool's hot path).
-- Semantics are those documented in services/spool/queue.py; errors that are the caller's
-- (stale token, batches not held) come back as {"error": ...} so nothing is half-applied.

-- Lease the ready head batches of ONE table for a destination type (NULL when nothing is ready).
-- Fair across clients: tables of clients holding the fewest live leases first, then the oldest
-- data. A dead or not-yet-due head keeps its whole table out (never load out of order).
CREATE FUNCTION spool_lease(
    p_destination_type text,
    p_owner text,
    p_lease_seconds integer,
    p_max_batches integer,
    p_max_bytes bigint,
    p_candidates integer
) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    cand record;
    b record;
    took bigint[];
    size bigint;
    token uuid;
    expires timestamptz;
    leased jsonb;
BEGIN
    FOR cand IN
        WITH busy AS (
            SELECT client_id, count(*) AS live FROM table_leases
            WHERE expires_at > now() GROUP BY client_id
        )
        SELECT l.client_id, l.table_name
        FROM table_leases l
        CROSS JOIN LATERAL (
            SELECT h.state, h.next_attempt_at, h.oldest_received_at, h.destination_type
            FROM batches h
            WHERE h.client_id = l.client_id AND h.table_name = l.table_name
              AND h.state IN ('pending', 'leased', 'retry_wait', 'dead')
            ORDER BY h.partition, h.first_offset
            LIMIT 1
        ) head
        LEFT JOIN busy ON busy.client_id = l.client_id
        WHERE (l.expires_at IS NULL OR l.expires_at <= now())
          AND head.destination_type = p_destination_type
          AND head.state IN ('pending', 'retry_wait') AND head.next_attempt_at <= now()
        ORDER BY coalesce(busy.live, 0), head.oldest_received_at
        LIMIT p_candidates
    LOOP
        -- Another leaser may hold (or have just taken) this table: skip it, never wait.
        PERFORM 1 FROM table_leases
        WHERE client_id = cand.client_id AND table_name = cand.table_name
          AND (expires_at IS NULL OR expires_at <= now())
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;

        took := '{}';
        size := 0;
        FOR b IN
            SELECT batch_id, state, next_attempt_at <= now() AS due, bytes FROM batches
            WHERE client_id = cand.client_id AND table_name = cand.table_name
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
            expires_at = now() + make_interval(secs => p_lease_seconds)
        WHERE client_id = cand.client_id AND table_name = cand.table_name
        RETURNING expires_at INTO expires;

        WITH upd AS (
            UPDATE batches
            SET state = 'leased', lease_token = token, lease_owner = p_owner,
                lease_expires_at = expires, attempts = attempts + 1, updated_at = now()
            WHERE batch_id = ANY (took)
            RETURNING batch_id, object_key, partition, first_offset, last_offset, record_count,
                      bytes, oldest_received_at, attempts
        )
        SELECT jsonb_agg(
                   jsonb_build_object(
                       'batch_id', batch_id, 'object_key', object_key, 'partition', partition,
                       'first_offset', first_offset, 'last_offset', last_offset,
                       'record_count', record_count, 'bytes', bytes,
                       'oldest_received_at', oldest_received_at, 'attempts', attempts)
                   ORDER BY partition, first_offset)
        INTO leased FROM upd;

        RETURN jsonb_build_object(
            'lease_token', token, 'client_id', cand.client_id, 'table_name', cand.table_name,
            'destination_type', p_destination_type, 'expires_at', expires, 'batches', leased);
    END LOOP;
    RETURN NULL;
END
$$;

-- Mark a lease's batches loaded (all, or those named); release the table when none is left.
CREATE FUNCTION spool_ack(p_token uuid, p_batch_ids bigint[]) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    held bigint[];
    ids bigint[];
    missing bigint[];
BEGIN
    SELECT array_agg(batch_id ORDER BY batch_id) INTO held FROM (
        SELECT batch_id FROM batches
        WHERE lease_token = p_token AND state = 'leased'
        ORDER BY batch_id FOR UPDATE
    ) locked;
    IF held IS NULL THEN
        RETURN jsonb_build_object('error', 'unknown or stale lease token');
    END IF;
    IF p_batch_ids IS NULL THEN
        ids := held;
    ELSE
        missing := ARRAY(SELECT unnest(p_batch_ids) EXCEPT SELECT unnest(held) ORDER BY 1);
        IF cardinality(missing) > 0 THEN
            RETURN jsonb_build_object('error', format('batches [%s] are not held by this lease',
                                                      array_to_string(missing, ', ')));
        END IF;
        ids := ARRAY(SELECT DISTINCT unnest(p_batch_ids) ORDER BY 1);
    END IF;

    UPDATE batches
    SET state = 'loaded', loaded_at = now(), updated_at = now(), lease_token = NULL,
        lease_owner = NULL, lease_expires_at = NULL, first_failed_at = NULL
    WHERE batch_id = ANY (ids);

    IF NOT EXISTS (SELECT 1 FROM batches WHERE lease_token = p_token AND state = 'leased') THEN
        UPDATE table_leases SET lease_token = NULL, lease_owner = NULL, expires_at = NULL
        WHERE lease_token = p_token;
    END IF;
    RETURN jsonb_build_object('acked', cardinality(ids));
END
$$;
