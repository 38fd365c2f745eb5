-- Notification hooks: a client's URLs that hear about its loads, rejections, dead batches and
-- extraction runs (docs/architecture.md, "Events and hooks").
--
-- The outbox: an event row (and one delivery row per hook that wants it) is written by
-- hook_emit inside the transaction that records the fact (the spool's ack, a batch going dead,
-- a run ending), so an event exists if and only if its fact was committed. Events nobody
-- subscribed to are not written: a hook hears what happens after it was created.

CREATE TABLE hooks (
    hook_id     bigserial PRIMARY KEY,
    client_id   bigint NOT NULL REFERENCES clients,
    url         text NOT NULL CHECK (length(url) BETWEEN 8 AND 2000),
    events      text[] NOT NULL CHECK (cardinality(events) > 0),
    secret      bytea NOT NULL,  -- the signing secret, encrypted (purpose "hook")
    created_at  timestamptz NOT NULL DEFAULT now(),
    removed_at  timestamptz
);
CREATE INDEX hooks_live_by_client ON hooks (client_id) WHERE removed_at IS NULL;

CREATE TABLE hook_events (
    event_id    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id   bigint NOT NULL REFERENCES clients,
    type        text NOT NULL,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE hook_deliveries (
    delivery_id     bigserial PRIMARY KEY,
    event_id        uuid NOT NULL REFERENCES hook_events ON DELETE CASCADE,
    hook_id         bigint NOT NULL REFERENCES hooks,
    client_id       bigint NOT NULL REFERENCES clients,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- a 'sending' row whose sender died is due again after this
    claimed_until   timestamptz,
    -- retries stop (dead) once failures outlast the retry window counted from here: the
    -- event's time, or a redelivery's
    window_from     timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX hook_deliveries_due ON hook_deliveries (next_attempt_at)
    WHERE state IN ('pending', 'sending');
CREATE INDEX hook_deliveries_by_client ON hook_deliveries (client_id, delivery_id);

-- Record an event for every live hook of the client that wants its type; NULL when none does.
CREATE FUNCTION hook_emit(p_client_id bigint, p_type text, p_payload jsonb) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    ev uuid;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM hooks WHERE client_id = p_client_id AND removed_at IS NULL
                   AND p_type = ANY (events)) THEN
        RETURN NULL;
    END IF;
    INSERT INTO hook_events (client_id, type, payload) VALUES (p_client_id, p_type, p_payload)
    RETURNING event_id INTO ev;
    INSERT INTO hook_deliveries (event_id, hook_id, client_id)
    SELECT ev, hook_id, client_id FROM hooks
    WHERE client_id = p_client_id AND removed_at IS NULL AND p_type = ANY (events);
    RETURN ev;
END
$$;

-- spool_ack with the loader's report ({"num_rows": n, "num_rows_rejected": m}): the ack, and in
-- the same transaction load.completed (and records.rejected when some were) for the client's
-- hooks. Without a report, or for a client with no live hook, it is spool_ack.
CREATE FUNCTION spool_ack(p_token uuid, p_batch_ids bigint[], p_report jsonb) RETURNS jsonb
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
BEGIN
    IF p_report IS NOT NULL AND EXISTS (
        SELECT 1 FROM table_leases l JOIN hooks h USING (client_id)
        WHERE l.lease_token = p_token AND h.removed_at IS NULL
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
    rejected := coalesce((p_report ->> 'num_rows_rejected')::bigint, 0);
    body := jsonb_build_object(
        'version', 1,
        'client_id', v_client,
        'table_name', v_table,
        'table_version', p_report -> 'table_version',
        'tables', jsonb_build_array(jsonb_build_object(
            'destination_table_name', coalesce(p_report ->> 'destination_table_name',
                                               v_table),
            'num_rows', coalesce((p_report ->> 'num_rows')::bigint, 0),
            'num_rows_rejected', rejected,
            'num_records', v_records)),
        'destination_type', p_report -> 'destination_type',
        'completed_at', now(),
        'batch_ids', to_jsonb(v_ids),
        'request_ids', to_jsonb(v_requests));
    PERFORM hook_emit(v_client, 'load.completed', body);
    IF rejected > 0 THEN
        PERFORM hook_emit(v_client, 'records.rejected', body);
    END IF;
    RETURN acked;
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
    p_max_per_client integer,
    p_report jsonb
) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    acked jsonb;
BEGIN
    acked := spool_ack(p_token, p_batch_ids, p_report);
    IF acked ? 'error' THEN
        RETURN acked;
    END IF;
    RETURN acked || jsonb_build_object('next', spool_lease(
        p_destination_type, p_owner, p_lease_seconds, p_max_batches, p_max_bytes, p_candidates,
        p_max_per_client));
END
$$;

-- batch.dead for batches that just went dead (one event per client and table).
CREATE FUNCTION hook_batches_dead(p_batch_ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT b.client_id, b.table_name, array_agg(b.batch_id ORDER BY b.batch_id) AS ids,
               (array_agg(b.last_error ORDER BY b.batch_id))[1] AS error,
               (array_agg(b.last_error_kind ORDER BY b.batch_id))[1] AS kind
        FROM batches b
        WHERE b.batch_id = ANY (p_batch_ids) AND b.state = 'dead'
          AND EXISTS (SELECT 1 FROM hooks h WHERE h.client_id = b.client_id
                      AND h.removed_at IS NULL)
        GROUP BY b.client_id, b.table_name
    LOOP
        PERFORM hook_emit(g.client_id, 'batch.dead', jsonb_build_object(
            'client_id', g.client_id, 'table_name', g.table_name, 'batch_ids', to_jsonb(g.ids),
            'error', left(g.error, 2000), 'error_kind', g.kind));
    END LOOP;
END
$$;
