-- 0158: the sweeper ends rows whose outcome stayed 'unknown' too long (sweeper.expire_unknown_outcomes).
CREATE INDEX messages_unknown_idx ON messages (updated_at) WHERE status = 'unknown';
