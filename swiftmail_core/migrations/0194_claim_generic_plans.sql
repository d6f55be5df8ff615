-- 0194: the outbox claim plans its statements for any tenant (generic plans), so a
-- brand-new tenant's first big campaign is claimed by key, not read whole per claim.
--
-- A tenant whose rows are not in the statistics yet (a new tenant before
-- autovacuum analyzes the tables; on a big table 20,000 new rows may not
-- trigger it for a long time) is estimated at one row. Planned for the tenant's
-- value (custom plans), the claim of 0193 took the lease's rows by the tenant
-- alone and filtered them by id (every due row of the campaign read on each
-- claim), and joined each picked row to the tenant's contacts by tenant alone
-- (a walk of its contacts per row, longer as the campaign goes on). Measured
-- right after a new tenant's 20,000-recipient audience was written: the first
-- claim of 200 read 20,100 contacts and 20,200 ledger rows, the next ones
-- 40,000 to 180,000 contacts. A generic plan estimates the tenant as an average
-- one (the table's rows over its tenants): 200 contacts and a few hundred
-- ledger rows a claim (tests/core/sending/test_claim_plan.py).
--
-- Citus refuses generic plans here (a delegated function's statements may not
-- carry parameters), so on Citus the function keeps custom plans, as before.
-- Not fixed: the pick may walk messages_due_idx (every tenant's due rows)
-- instead of messages_tenant_due_idx when both read as empty in the statistics.
--
-- The body is 0193's otherwise; grants are kept (CREATE OR REPLACE).
CREATE OR REPLACE FUNCTION swiftmail_claim_tenant(
    p_tenant uuid, p_owner text, p_limit integer, p_lease_seconds double precision)
    RETURNS TABLE (more boolean, id bigint, tenant_id uuid, campaign_id uuid, contact_id uuid,
                   email text, kind text, transport text, attempts integer, payload jsonb,
                   variant text, resend_to text, resend_until timestamptz)
    LANGUAGE plpgsql VOLATILE SET search_path = public
    -- Walk the due index in order and stop at LIMIT: right after a big audience is
    -- written the statistics still say "few due rows", and the planner would rather
    -- bitmap-scan and sort every due row on each claim. Join the batch to contacts,
    -- campaigns and suppressions row by row (0193): a hash join read every contact
    -- of the tenant on each claim.
    SET enable_bitmapscan = off SET enable_sort = off
    SET enable_hashjoin = off SET enable_mergejoin = off
    -- 0194: generic plans (set in the body, single node only); this scopes it to the function.
    SET plan_cache_mode = auto
AS $$
#variable_conflict use_column
DECLARE
    found_count integer := 0;
    v_more boolean;
    held bigint[] := '{}';
    cancelled bigint[] := '{}';
    suppressed bigint[] := '{}';
    ids bigint[] := '{}';
    wanted integer;
    granted integer := 0;
    wait double precision;
    leased integer := 0;
    next_due timestamptz;
    c record;
    b record;
    v_tokens double precision;
    v_day_count bigint;
    quota_left bigint;
    v_rate integer;
    attempt integer;
    have_budget boolean := false;
BEGIN
    -- 0194: plan for any tenant, not for this one's statistics. NOTE: not on Citus,
    -- which refuses a delegated function's parameters in its statements.
    IF current_setting('citus.version', true) IS NULL THEN
        PERFORM set_config('plan_cache_mode', 'force_generic_plan', true);
    END IF;
    -- 1. Lock the tenant's due rows; sort out rows of campaigns no longer sending
    --    and rows whose address is suppressed (or whose contact is not active).
    FOR c IN
        WITH picked AS (
            SELECT m.tenant_id, m.id, m.kind, m.contact_id, m.email, m.campaign_id
            FROM messages m
            WHERE m.tenant_id = p_tenant AND m.status IN ('queued', 'deferred')
              AND m.next_attempt_at <= now()
            ORDER BY m.next_attempt_at
            LIMIT p_limit
            FOR UPDATE OF m SKIP LOCKED
        )
        SELECT p.id,
               (p.kind IN ('campaign', 'journey') AND ct.status IS DISTINCT FROM 'active')
               OR EXISTS (
                   SELECT 1 FROM suppressions x
                   WHERE x.tenant_id = p_tenant AND x.email_lower = lower(p.email)
                     AND (x.expires_at IS NULL OR x.expires_at > now())) AS suppressed,
               CASE WHEN p.kind <> 'campaign' THEN 'sending' ELSE cp.status END
                   AS campaign_status
        FROM picked p
        LEFT JOIN contacts ct ON ct.tenant_id = p_tenant AND ct.id = p.contact_id
        LEFT JOIN campaigns cp ON cp.tenant_id = p_tenant AND cp.id = p.campaign_id
    LOOP
        found_count := found_count + 1;
        IF c.campaign_status IS DISTINCT FROM 'sending' THEN
            -- A paused campaign's rows wait as 'held'; any other state ends them.
            IF c.campaign_status = 'paused' THEN
                held := held || c.id;
            ELSE
                cancelled := cancelled || c.id;
            END IF;
        ELSIF c.suppressed THEN
            suppressed := suppressed || c.id;
        ELSE
            ids := ids || c.id;
        END IF;
    END LOOP;
    v_more := found_count = p_limit;
    -- NOTE: each guard below is a sub-select (0193), so the planner finds the rows
    -- by primary key, never through a due index whose statistics may say "empty".
    IF cardinality(held) > 0 THEN
        UPDATE messages SET status = 'held', updated_at = now()
        WHERE tenant_id = p_tenant AND id = ANY (held)
          AND (SELECT status IN ('deferred', 'queued'));
    END IF;
    IF cardinality(cancelled) > 0 THEN
        UPDATE messages SET status = 'cancelled', updated_at = now()
        WHERE tenant_id = p_tenant AND id = ANY (cancelled)
          AND (SELECT status IN ('deferred', 'queued'));
    END IF;
    IF cardinality(suppressed) > 0 THEN
        UPDATE messages SET status = 'suppressed', last_error = 'suppressed at send time',
               updated_at = now()
        WHERE tenant_id = p_tenant AND id = ANY (suppressed)
          AND (SELECT status IN ('deferred', 'queued'));
    END IF;

    -- 2. Spend the tenant's budget: a token bucket at send_rate_per_second and the
    --    daily quota; a suspended or paused tenant gets nothing for 300 s.
    wanted := cardinality(ids);
    IF wanted > 0 THEN
        FOR attempt IN 1 .. 2 LOOP
            SELECT sb.tokens,
                   extract(epoch FROM now() - sb.refilled_at)::double precision AS elapsed,
                   sb.day = current_date AS same_day, sb.day_count,
                   t.send_rate_per_second AS rate, t.daily_quota AS quota,
                   CASE WHEN EXISTS (SELECT 1 FROM sending_pauses sp
                                     WHERE sp.tenant_id = p_tenant AND sp.resumed_at IS NULL)
                        THEN 'paused' ELSE t.status END AS status,
                   extract(epoch FROM (current_date + 1)::timestamptz - now())::double precision
                       AS to_midnight
              INTO b
              FROM send_budgets sb JOIN tenants t ON t.id = sb.tenant_id
             WHERE sb.tenant_id = p_tenant
               FOR UPDATE OF sb;
            have_budget := FOUND;
            EXIT WHEN have_budget OR attempt = 2;
            -- A tenant's first claim: its bucket starts full (a plain VALUES insert, which
            -- Citus runs as is; INSERT ... SELECT would go through an intermediate result).
            SELECT t.send_rate_per_second INTO v_rate FROM tenants t WHERE t.id = p_tenant;
            EXIT WHEN v_rate IS NULL;
            INSERT INTO send_budgets (tenant_id, tokens) VALUES (p_tenant, v_rate)
            ON CONFLICT (tenant_id) DO NOTHING;
        END LOOP;
        IF have_budget THEN
            have_budget := b.status = 'active';
        END IF;
        IF NOT have_budget THEN
            granted := 0;
            wait := 300;
        ELSE
            v_tokens := least(b.rate::double precision, b.tokens + b.elapsed * b.rate);
            v_day_count := CASE WHEN b.same_day THEN b.day_count ELSE 0 END;
            quota_left := greatest(0, b.quota - v_day_count);
            granted := least(wanted, floor(v_tokens)::bigint, quota_left)::integer;
            wait := CASE WHEN granted >= wanted THEN 0
                         WHEN quota_left <= granted THEN b.to_midnight
                         ELSE (wanted - granted)::double precision / b.rate END;
            wait := greatest(wait, 0.05);
            UPDATE send_budgets
               SET tokens = v_tokens - granted, refilled_at = now(), day = current_date,
                   day_count = v_day_count + granted
             WHERE tenant_id = p_tenant;
        END IF;
        IF granted < wanted THEN
            -- Rows over budget wait; the tenant's hint moves to when budget returns.
            v_more := false;
            UPDATE messages SET next_attempt_at = now() + make_interval(secs => wait)
            WHERE tenant_id = p_tenant AND id = ANY (ids[granted + 1:]);
        ELSE
            wait := NULL;
        END IF;

        -- 3. Lease the rest to this owner and count the attempt.
        IF granted > 0 THEN
            RETURN QUERY
            WITH leased_rows AS (
                UPDATE messages
                   SET status = 'sending', lease_owner = p_owner,
                       lease_expires_at = now() + make_interval(secs => p_lease_seconds),
                       attempts = attempts + 1, updated_at = now()
                 WHERE tenant_id = p_tenant AND id = ANY (ids[1:granted])
                   AND (SELECT status IN ('deferred', 'queued'))
             RETURNING id, tenant_id, campaign_id, contact_id, email, kind, transport,
                       attempts, payload, variant, resend_to, resend_until)
            SELECT v_more, l.* FROM leased_rows l;
            GET DIAGNOSTICS leased = ROW_COUNT;
        END IF;
    END IF;

    -- 4. A tenant with no more due rows (or out of budget): its due-tenant hint
    --    (queue 'outbox') moves on, as swiftmail_core/due_tenants.py settle_within does.
    IF NOT v_more THEN
        IF wait IS NOT NULL THEN
            UPDATE due_tenants SET due_at = now() + make_interval(secs => wait)
            WHERE tenant_id = p_tenant AND queue = 'outbox';
        ELSE
            SELECT min(m.next_attempt_at) INTO next_due FROM messages m
            WHERE m.tenant_id = p_tenant AND m.status IN ('queued', 'deferred');
            IF next_due IS NULL THEN
                DELETE FROM due_tenants WHERE tenant_id = p_tenant AND queue = 'outbox';
            ELSE
                UPDATE due_tenants SET due_at = next_due
                WHERE tenant_id = p_tenant AND queue = 'outbox';
            END IF;
        END IF;
    END IF;
    IF leased = 0 THEN
        RETURN QUERY SELECT v_more, NULL::bigint, NULL::uuid, NULL::uuid, NULL::uuid,
                            NULL::text, NULL::text, NULL::text, NULL::integer, NULL::jsonb,
                            NULL::text, NULL::text, NULL::timestamptz;
    END IF;
END;
$$;
