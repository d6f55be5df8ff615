-- 0157: the reputation guards' tenant events (see 0120_sending_pauses.sql).
-- Numbered after 0154, which restates the whole events type list: a later
-- migration that restates it must keep every type below.
ALTER TABLE events DROP CONSTRAINT events_type_check;
ALTER TABLE events ADD CONSTRAINT events_type_check CHECK (type IN ('accepted', 'delivered',
    'deferred', 'bounced', 'expired', 'opened', 'clicked', 'complained', 'unsubscribed',
    'subscribed', 'confirmed', 'webhook_disabled', 'campaign_paused', 'sending_paused',
    'sending_resumed'));
