-- 0180: send time in the recipient's zone (docs/send-time.md, sending/send_time.py).
-- local_send_time: HH:MM on the recipient's clock; each ledger row's next_attempt_at
-- is computed from it when the audience is resolved. timezone_fallbacks counts the
-- recipients whose timezone attribute named no known zone (they got the tenant's).
ALTER TABLE campaigns ADD COLUMN local_send_time text
    CHECK (local_send_time ~ '^([01][0-9]|2[0-3]):[0-5][0-9]$');
ALTER TABLE campaigns ADD COLUMN timezone_fallbacks bigint NOT NULL DEFAULT 0;
