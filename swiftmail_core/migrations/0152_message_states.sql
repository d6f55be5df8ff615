-- 0152: one message state machine (swiftmail_core/sending/state.py).
--
-- 'complained' and 'unknown' join the ledger's states: a complaint is where a
-- delivered message ends, and 'unknown' is a request whose answer was lost
-- after it went out (reconciled by the provider's events, never resent).
ALTER TABLE messages DROP CONSTRAINT messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('queued', 'sending', 'accepted', 'deferred', 'delivered', 'bounced',
                      'complained', 'failed', 'suppressed', 'cancelled', 'expired', 'unknown'));

-- Every event source key a tenant has seen, whatever the event's time: the
-- events table's own unique key must include occurred_at (it is partitioned by
-- it), so a report that arrives twice with two arrival times needs this.
CREATE TABLE event_sources (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    source_key text NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, source_key)
);
ALTER TABLE event_sources ENABLE ROW LEVEL SECURITY;
ALTER TABLE event_sources FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON event_sources TO @app_role@
    USING (tenant_id = swiftmail_current_tenant())
    WITH CHECK (tenant_id = swiftmail_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON event_sources TO @app_role@;
CREATE POLICY system_machinery ON event_sources TO @system_role@ USING (true) WITH CHECK (true);
GRANT SELECT, INSERT ON event_sources TO @system_role@;

-- Keys of events already stored count as seen. NOTE: the owner runs migrations and
-- is itself subject to FORCE RLS (no policy: it sees no rows), so lift FORCE for
-- the copy, inside this migration's transaction.
ALTER TABLE events NO FORCE ROW LEVEL SECURITY;
ALTER TABLE event_sources NO FORCE ROW LEVEL SECURITY;
INSERT INTO event_sources (tenant_id, source_key)
SELECT DISTINCT tenant_id, source_key FROM events WHERE source_key IS NOT NULL
ON CONFLICT DO NOTHING;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
ALTER TABLE event_sources FORCE ROW LEVEL SECURITY;
