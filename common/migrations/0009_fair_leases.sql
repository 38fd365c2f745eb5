-- Fair leasing across clients (docs/architecture.md, "Spool: fairness"):
--  * a per-client cap on live leases per destination type (p_max_per_client), so one client's
--    backlog of many tables cannot take every loader worker;
--  * among ready tables, clients holding fewer live leases first, then the client served least
--    recently (client_turns), then the oldest data;
--  * candidates come from the ready batches (the batches_ready index), not from every
--    (client, table) ever seen: a lease costs the same however many tables sit idle.

ALTER TABLE table_leases ADD COLUMN destination_type text;
CREATE INDEX table_leases_live ON table_leases (client_id, destination_type)
    WHERE expires_at IS NOT NULL;

-- When each client last got a lease for a destination type. Its row lock also serialises a
-- client's leasers while they count its live leases against the cap.
CREATE TABLE client_turns (
    client_id        bigint NOT NULL REFERENCES clients,
    destination_type text NOT NULL,
    served_at        timestamptz,
    PRIMARY KEY (client_id, destination_type)
);

DROP FUNCTION spool_ack_and_lease(uuid, bigint[], text, text, integer, integer, bigint, integer);
DROP FUNCTION spool_lease(text, text, integer, integer, bigint, integer);

CREATE FUNCTION spool_lease(
    p_destination_type text,
    p_owner text,
    p_lease_seconds integer,
    p_max_batches integer,
    p_max_bytes bigint,
    p_candidates integer,
    p_max_per_client integer
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
    live integer;
BEGIN
    FOR cand IN
        WITH ready AS (
            SELECT DISTINCT client_id, table_name FROM batches
            WHERE destination_type = p_destination_type
              AND state IN ('pending', 'retry_wait') AND next_attempt_at <= now()
        ), busy AS (
            SELECT l.client_id, count(*) AS live FROM table_leases l
            WHERE l.expires_at > now() AND l.destination_type = p_destination_type
              AND l.client_id IN (SELECT client_id FROM ready)
            GROUP BY l.client_id
        )
        SELECT r.client_id, r.table_name
        FROM ready r
        JOIN table_leases l ON l.client_id = r.client_id AND l.table_name = r.table_name
        CROSS JOIN LATERAL (
            SELECT h.state, h.next_attempt_at, h.oldest_received_at, h.destination_type
            FROM batches h
            WHERE h.client_id = r.client_id AND h.table_name = r.table_name
              AND h.state IN ('pending', 'leased', 'retry_wait', 'dead')
            ORDER BY h.partition, h.first_offset
            LIMIT 1
        ) head
        LEFT JOIN busy ON busy.client_id = r.client_id
        LEFT JOIN client_turns t
               ON t.client_id = r.client_id AND t.destination_type = p_destination_type
        WHERE (l.expires_at IS NULL OR l.expires_at <= now())
          AND coalesce(busy.live, 0) < p_max_per_client
          AND head.destination_type = p_destination_type
          AND head.state IN ('pending', 'retry_wait') AND head.next_attempt_at <= now()
        ORDER BY coalesce(busy.live, 0), t.served_at NULLS FIRST, head.oldest_received_at
        LIMIT p_candidates
    LOOP
        -- Another leaser may hold (or have just taken) this table: skip it, never wait.
        PERFORM 1 FROM table_leases
        WHERE client_id = cand.client_id AND table_name = cand.table_name
          AND (expires_at IS NULL OR expires_at <= now())
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;

        -- The cap, counted under the client's turn lock (its other leasers wait here briefly).
        INSERT INTO client_turns (client_id, destination_type)
        VALUES (cand.client_id, p_destination_type) ON CONFLICT DO NOTHING;
        PERFORM 1 FROM client_turns
        WHERE client_id = cand.client_id AND destination_type = p_destination_type FOR UPDATE;
        SELECT count(*) INTO live FROM table_leases
        WHERE client_id = cand.client_id AND destination_type = p_destination_type
          AND expires_at > now();
        CONTINUE WHEN live >= p_max_per_client;

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
        SET lease_token = token, lease_owner = p_owner, destination_type = p_destination_type,
            expires_at = now() + make_interval(secs => p_lease_seconds)
        WHERE client_id = cand.client_id AND table_name = cand.table_name
        RETURNING expires_at INTO expires;

        UPDATE client_turns SET served_at = clock_timestamp()
        WHERE client_id = cand.client_id AND destination_type = p_destination_type;

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

CREATE FUNCTION spool_ack_and_lease(
    p_token uuid,
    p_batch_ids bigint[],
    p_destination_type text,
    p_owner text,
    p_lease_seconds integer,
    p_max_batches integer,
    p_max_bytes bigint,
    p_candidates integer,
    p_max_per_client integer
) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    acked jsonb;
BEGIN
    acked := spool_ack(p_token, p_batch_ids);
    IF acked ? 'error' THEN
        RETURN acked;
    END IF;
    RETURN acked || jsonb_build_object('next', spool_lease(
        p_destination_type, p_owner, p_lease_seconds, p_max_batches, p_max_bytes, p_candidates,
        p_max_per_client));
END
$$;
