-- A lease names its client's destination version (destinations.updated_at in microseconds
-- since the epoch): a loader whose cached settings are older reads them again, so a changed
-- destination takes effect on the next lease, not when the loader's cache expires.
CREATE FUNCTION spool_versioned(p_lease jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_lease IS NULL OR jsonb_typeof(p_lease) <> 'object' THEN p_lease
           ELSE p_lease || jsonb_build_object('destination_version', (
               SELECT floor(extract(epoch FROM updated_at) * 1000000)::bigint
               FROM destinations WHERE client_id = (p_lease ->> 'client_id')::bigint))
           END
$$;

-- The same for an ack's {"acked", "next"} answer.
CREATE FUNCTION spool_versioned_next(p_answer jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_answer ? 'next'
                THEN jsonb_set(p_answer, '{next}', spool_versioned(p_answer -> 'next'))
                ELSE p_answer END
$$;
