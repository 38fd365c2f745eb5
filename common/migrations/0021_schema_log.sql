-- The schema log and a kept copy of rejected records (docs/architecture.md, "Events and
-- hooks"): the loader's ack report names the schema changes its load made and up to 100 of
-- the records it rejected; the ack writes them here, with the schema.changed and
-- records.rejected hook events, in its own transaction.

CREATE TABLE schema_log (
    change_id        bigserial PRIMARY KEY,
    client_id        bigint NOT NULL REFERENCES clients,
    table_name       text NOT NULL,  -- the client's table, as sent
    warehouse_table  text NOT NULL,  -- the warehouse table changed (a subtable, maybe)
    change           text NOT NULL
                     CHECK (change IN ('table_created', 'column_added', 'column_widened',
                                       'column_split')),
    column_name      text,
    before           jsonb,
    after            jsonb,
    batch_ids        bigint[] NOT NULL,
    destination_type text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schema_log_by_client ON schema_log (client_id, table_name, change_id);

CREATE TABLE rejected_records (
    rejection_id bigserial PRIMARY KEY,
    client_id    bigint NOT NULL REFERENCES clients,
    table_name   text NOT NULL,
    record       text NOT NULL,  -- cut to 2,000 characters
    reason       text NOT NULL,
    batch_ids    bigint[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rejected_records_by_client ON rejected_records (client_id, created_at);

CREATE OR REPLACE FUNCTION spool_ack(p_token uuid, p_batch_ids bigint[], p_report jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    acked jsonb;
    v_client bigint;
    v_table text;
    v_ids bigint[];
    v_records bigint;
    v_requests text[];
    body jsonb;
    rejected bigint;
    changes jsonb;
    kept jsonb;
BEGIN
    changes := coalesce(p_report -> 'schema_changes', '[]');
    kept := coalesce(p_report -> 'rejections', '[]');
    IF p_report IS NOT NULL AND (
        jsonb_array_length(changes) > 0 OR jsonb_array_length(kept) > 0 OR EXISTS (
            SELECT 1 FROM table_leases l JOIN hooks h USING (client_id)
            WHERE l.lease_token = p_token AND h.removed_at IS NULL)
    ) THEN
        SELECT b.client_id, b.table_name, array_agg(b.batch_id ORDER BY b.batch_id),
               sum(b.record_count),
               (SELECT coalesce(array_agg(DISTINCT r), '{}') FROM batches x, unnest(x.request_ids) r
                WHERE x.lease_token = p_token AND x.state = 'leased'
                  AND (p_batch_ids IS NULL OR x.batch_id = ANY (p_batch_ids)))
        INTO v_client, v_table, v_ids, v_records, v_requests
        FROM batches b
        WHERE b.lease_token = p_token AND b.state = 'leased'
          AND (p_batch_ids IS NULL OR b.batch_id = ANY (p_batch_ids))
        GROUP BY b.client_id, b.table_name;
    END IF;
    acked := spool_ack(p_token, p_batch_ids);
    IF acked ? 'error' OR v_client IS NULL THEN
        RETURN acked;
    END IF;

    INSERT INTO schema_log (client_id, table_name, warehouse_table, change, column_name, before,
                            after, batch_ids, destination_type)
    SELECT v_client, v_table, c ->> 'warehouse_table', c ->> 'change', c ->> 'column',
           c -> 'before', c -> 'after', v_ids, p_report ->> 'destination_type'
    FROM jsonb_array_elements(changes) c;
    INSERT INTO rejected_records (client_id, table_name, record, reason, batch_ids)
    SELECT v_client, v_table, left(r ->> 'record', 2000), left(r ->> 'reason', 2000), v_ids
    FROM jsonb_array_elements(kept) r;

    rejected := coalesce((p_report ->> 'num_rows_rejected')::bigint, 0);
    body := jsonb_build_object(
        'version', 1,
        'client_id', v_client,
        'table_name', v_table,
        'table_version', p_report -> 'table_version',
        'tables', jsonb_build_array(jsonb_build_object(
            'destination_table_name', coalesce(p_report ->> 'destination_table_name', v_table),
            'num_rows', coalesce((p_report ->> 'num_rows')::bigint, 0),
            'num_rows_rejected', rejected,
            'num_records', v_records)),
        'destination_type', p_report -> 'destination_type',
        'completed_at', now(),
        'batch_ids', to_jsonb(v_ids),
        'request_ids', to_jsonb(v_requests));
    PERFORM hook_emit(v_client, 'load.completed', body);
    IF rejected > 0 THEN
        PERFORM hook_emit(v_client, 'records.rejected', body || jsonb_build_object(
            'sample', (SELECT coalesce(jsonb_agg(r), '[]') FROM (
                SELECT r FROM jsonb_array_elements(kept) r LIMIT 10) s)));
    END IF;
    IF jsonb_array_length(changes) > 0 THEN
        PERFORM hook_emit(v_client, 'schema.changed', jsonb_build_object(
            'client_id', v_client, 'table_name', v_table, 'changes', changes,
            'batch_ids', to_jsonb(v_ids), 'destination_type', p_report -> 'destination_type'));
    END IF;
    RETURN acked;
END
$$;
