-- A successful ack wakes the same client's batches waiting out a transient back-off: the
-- destination demonstrably works again, so its other tables need not wait up to the back-off cap
-- (10 min) after an outage ends. Otherwise spool_ack is as in 0005.

CREATE OR REPLACE FUNCTION spool_ack(p_token uuid, p_batch_ids bigint[]) RETURNS jsonb
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

    -- A load succeeded, so the destination works again: the client's batches waiting out a
    -- transient back-off (its other tables, after an outage) are due now instead of minutes on.
    UPDATE batches w SET next_attempt_at = now(), updated_at = now()
    FROM (SELECT DISTINCT client_id, destination_type FROM batches WHERE batch_id = ANY (ids)) d
    WHERE w.client_id = d.client_id AND w.destination_type = d.destination_type
      AND w.state = 'retry_wait' AND w.last_error_kind = 'transient'
      AND w.next_attempt_at > now();

    IF NOT EXISTS (SELECT 1 FROM batches WHERE lease_token = p_token AND state = 'leased') THEN
        UPDATE table_leases SET lease_token = NULL, lease_owner = NULL, expires_at = NULL
        WHERE lease_token = p_token;
    END IF;
    RETURN jsonb_build_object('acked', cardinality(ids));
END
$$;
