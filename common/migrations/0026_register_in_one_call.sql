-- Registration in one round trip, and several in one (docs/architecture.md, "Spool API").
-- spool_register(registration) is what services/spool/queue.py did in ~8 statements, each its
-- own round trip: the batch already registered under its object key comes back as it is
-- (idempotent); a client that does not exist is refused; a batch starting at or below its
-- (partition, client, table) high-water mark is a conflict; else the batch is inserted, the
-- mark advanced and the table's lease row made. Refusals and conflicts are answers
-- ({"error": "refused" | "conflict", "detail": ...}), found before anything is written, so
-- nothing is half-applied and one registration's refusal does not undo another's.
-- spool_register_many(registrations) registers a JSON array in its order, in one
-- transaction: the streamery's upload threads register together (one request, one commit).

CREATE FUNCTION spool_register(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_key text := p ->> 'object_key';
    v_client bigint := (p ->> 'client_id')::bigint;
    v_table text := p ->> 'table_name';
    v_partition integer := (p ->> 'partition')::integer;
    v_first bigint := (p ->> 'first_offset')::bigint;
    v_last bigint := (p ->> 'last_offset')::bigint;
    v_id bigint;
    v_type text;
    v_mark bigint;
BEGIN
    SELECT batch_id, destination_type INTO v_id, v_type FROM batches
    WHERE object_key = v_key AND replay_of IS NULL;
    IF FOUND THEN
        RETURN jsonb_build_object('batch_id', v_id, 'created', false, 'destination_type', v_type);
    END IF;
    PERFORM 1 FROM clients WHERE client_id = v_client;
    IF NOT FOUND THEN
        RETURN jsonb_build_object(
            'error', 'refused', 'detail', format('client %s does not exist', v_client));
    END IF;
    SELECT last_offset INTO v_mark FROM high_water
    WHERE partition = v_partition AND client_id = v_client AND table_name = v_table FOR UPDATE;
    IF FOUND AND v_first <= v_mark THEN
        RETURN jsonb_build_object('error', 'conflict', 'detail', format(
            'batch starts at offset %s, at or below the high-water mark %s of partition %s '
            'for this table', v_first, v_mark, v_partition));
    END IF;
    INSERT INTO batches (client_id, table_name, object_key, partition, first_offset, last_offset,
                         record_count, bytes, oldest_received_at, newest_received_at, request_ids,
                         destination_type)
    VALUES (v_client, v_table, v_key, v_partition, v_first, v_last,
            (p ->> 'record_count')::integer, (p ->> 'bytes')::bigint,
            (p ->> 'oldest_received_at')::timestamptz, (p ->> 'newest_received_at')::timestamptz,
            ARRAY(SELECT jsonb_array_elements_text(coalesce(p -> 'request_ids', '[]'))),
            (SELECT type FROM destinations WHERE client_id = v_client))
    ON CONFLICT (object_key) WHERE replay_of IS NULL DO NOTHING
    RETURNING batch_id, destination_type INTO v_id, v_type;
    IF v_id IS NULL THEN  -- registered concurrently under the same key
        SELECT batch_id, destination_type INTO v_id, v_type FROM batches
        WHERE object_key = v_key AND replay_of IS NULL;
        RETURN jsonb_build_object('batch_id', v_id, 'created', false, 'destination_type', v_type);
    END IF;
    INSERT INTO high_water (partition, client_id, table_name, last_offset)
    VALUES (v_partition, v_client, v_table, v_last)
    ON CONFLICT (partition, client_id, table_name)
    DO UPDATE SET last_offset = GREATEST(high_water.last_offset, EXCLUDED.last_offset);
    INSERT INTO table_leases (client_id, table_name) VALUES (v_client, v_table)
    ON CONFLICT DO NOTHING;
    RETURN jsonb_build_object('batch_id', v_id, 'created', true, 'destination_type', v_type);
END
$$;

CREATE FUNCTION spool_register_many(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    answers jsonb := '[]';
    registration jsonb;
BEGIN
    FOR registration IN
        SELECT value FROM jsonb_array_elements(p) WITH ORDINALITY ORDER BY ordinality
    LOOP
        answers := answers || jsonb_build_array(spool_register(registration));
    END LOOP;
    RETURN answers;
END
$$;
