-- oldest-compatible-code: 0187 (older code's ON CONFLICT names the unique key dropped here)
-- 0187: yearly date triggers (a birthday every year). A yearly journey enrolls
-- a contact once per year: occurrence is the year of the anniversary (0 for
-- every other trigger, which enrolls once), and the unique key holds it, so a
-- tick run twice, two workers at once or a crash between them cannot enroll a
-- contact twice in one year.
ALTER TABLE journeys ADD COLUMN trigger_yearly boolean NOT NULL DEFAULT false;
ALTER TABLE journeys ADD CONSTRAINT journeys_yearly_is_a_date
    CHECK (NOT trigger_yearly OR trigger_type = 'date_attribute');
ALTER TABLE journey_enrollments ADD COLUMN occurrence integer NOT NULL DEFAULT 0;
ALTER TABLE journey_enrollments
    DROP CONSTRAINT journey_enrollments_tenant_id_journey_id_contact_id_key;
ALTER TABLE journey_enrollments ADD CONSTRAINT journey_enrollments_once
    UNIQUE (tenant_id, journey_id, contact_id, occurrence);
