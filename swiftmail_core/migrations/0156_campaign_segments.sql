-- 0156: campaigns target lists and/or segments, with an optional sunset.
ALTER TABLE campaigns ADD COLUMN segment_ids uuid[] NOT NULL DEFAULT '{}';
-- Skip contacts added more than N days ago with no open or click in the last N days.
ALTER TABLE campaigns ADD COLUMN sunset_days integer CHECK (sunset_days BETWEEN 1 AND 3650);
