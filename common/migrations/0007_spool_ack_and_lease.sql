-- A loader's cycle in one call: ack its lease, then lease the next work (the spool's hot path).
-- One transaction: the ack is visible to the lease (the table it frees can be leased at once);
-- a stale token returns the ack's error and leases nothing.
CREATE FUNCTION spool_ack_and_lease(
    p_token uuid,
    p_batch_ids bigint[],
    p_destination_type text,
    p_owner text,
    p_lease_seconds integer,
    p_max_batches integer,
    p_max_bytes bigint,
    p_candidates integer
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
        p_destination_type, p_owner, p_lease_seconds, p_max_batches, p_max_bytes, p_candidates));
END
$$;
