-- 0173: journeys triggered by a date attribute (e.g. 3 days before "trial_end").
-- trigger_key names the attribute; a contact enters on the day its
-- attribute (YYYY-MM-DD) minus days_before is today (UTC).
ALTER TABLE journeys DROP CONSTRAINT journeys_trigger_type_check;
ALTER TABLE journeys ADD CONSTRAINT journeys_trigger_type_check
    CHECK (trigger_type IN ('list_subscribed', 'event', 'date_attribute'));
ALTER TABLE journeys ADD COLUMN trigger_days_before integer NOT NULL DEFAULT 0
    CHECK (trigger_days_before BETWEEN -366 AND 366);
