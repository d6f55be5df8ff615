-- 0154: the scheduler runs once per tick cluster-wide; paused campaigns leave the due set.
--
-- scheduler_ticks holds one row per periodic job: a worker runs the job only
-- when it wins the conditional UPDATE that takes the row's lease (and the
-- interval has passed), so however many workers and hosts tick, the work runs
-- once per tick and never twice at once (audience resolution included).
CREATE TABLE scheduler_ticks (
    name text PRIMARY KEY,
    ticked_at timestamptz NOT NULL DEFAULT '-infinity',
    lease_until timestamptz,
    ticked_by text
);
INSERT INTO scheduler_ticks (name) VALUES ('sending');
ALTER TABLE scheduler_ticks ENABLE ROW LEVEL SECURITY;
ALTER TABLE scheduler_ticks FORCE ROW LEVEL SECURITY;
CREATE POLICY system_machinery ON scheduler_ticks TO @system_role@ USING (true) WITH CHECK (true);
GRANT SELECT, UPDATE ON scheduler_ticks TO @system_role@;

-- 'held': a paused campaign's rows, out of the due index until it resumes.
ALTER TABLE messages DROP CONSTRAINT messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('queued', 'sending', 'accepted', 'deferred', 'delivered', 'bounced',
                      'complained', 'failed', 'suppressed', 'cancelled', 'expired', 'unknown',
                      'held'));

-- Why a campaign was paused by SwiftMail itself (a transport that keeps failing),
-- and how many batches in a row its transport has failed.
ALTER TABLE campaigns ADD COLUMN paused_reason text;
ALTER TABLE campaigns ADD COLUMN transport_failures integer NOT NULL DEFAULT 0;

ALTER TABLE events DROP CONSTRAINT events_type_check;
ALTER TABLE events ADD CONSTRAINT events_type_check CHECK (type IN ('accepted', 'delivered',
    'deferred', 'bounced', 'expired', 'opened', 'clicked', 'complained', 'unsubscribed',
    'subscribed', 'confirmed', 'webhook_disabled', 'campaign_paused'));
