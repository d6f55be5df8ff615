-- 0171: automated journeys (docs/journeys.md).
--
-- A journey starts on a trigger (a confirmed subscription to a list, or an
-- API event) and runs the steps of one immutable version. Each contact's
-- position is one row of journey_enrollments; due rows are claimed under a
-- lease (FOR UPDATE SKIP LOCKED), and each step is applied in one transaction
-- with the enrollment's advance and a journey_step_runs row, whose key makes
-- a step run at most once per enrollment.

CREATE TABLE journeys (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status text NOT NULL DEFAULT 'draft'
        CHECK (status IN ('draft', 'active', 'paused', 'archived')),
    trigger_type text NOT NULL CHECK (trigger_type IN ('list_subscribed', 'event')),
    -- The list id (list_subscribed) or the event name (event): what a trigger looks up.
    trigger_key text NOT NULL CHECK (length(trigger_key) BETWEEN 1 AND 200),
    current_version integer NOT NULL DEFAULT 1 CHECK (current_version >= 1),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);
CREATE INDEX journeys_created_idx ON journeys (tenant_id, created_at, id);
CREATE INDEX journeys_trigger_idx ON journeys (tenant_id, trigger_type, trigger_key)
    WHERE status = 'active';

CREATE TABLE journey_versions (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    journey_id uuid NOT NULL,
    version integer NOT NULL CHECK (version >= 1),
    definition jsonb NOT NULL CHECK (jsonb_typeof(definition) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, journey_id, version),
    FOREIGN KEY (tenant_id, journey_id) REFERENCES journeys (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE journey_enrollments (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    journey_id uuid NOT NULL,
    contact_id uuid NOT NULL,
    version integer NOT NULL,
    step integer NOT NULL DEFAULT 0 CHECK (step >= 0),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'completed', 'exited')),
    exit_reason text,
    trigger_data jsonb NOT NULL DEFAULT '{}',
    next_run_at timestamptz NOT NULL DEFAULT now(),
    lease_owner text,
    lease_expires_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,   -- failed tries of the current step
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (tenant_id, id),
    -- A trigger that fires twice enrolls once.
    UNIQUE (tenant_id, journey_id, contact_id),
    FOREIGN KEY (tenant_id, journey_id, version)
        REFERENCES journey_versions (tenant_id, journey_id, version) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE
);
-- Claiming is cross-tenant (system role): a small partial index over due positions.
CREATE INDEX journey_enrollments_due_idx ON journey_enrollments (next_run_at)
    WHERE status = 'active';
CREATE INDEX journey_enrollments_contact_idx ON journey_enrollments (tenant_id, contact_id)
    WHERE status = 'active';

-- One row per step an enrollment ran: the key refuses a second run of a step.
CREATE TABLE journey_step_runs (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    enrollment_id uuid NOT NULL,
    step integer NOT NULL,
    journey_id uuid NOT NULL,
    version integer NOT NULL,
    step_id text NOT NULL,
    outcome text NOT NULL DEFAULT '',
    message_id bigint,
    ran_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, enrollment_id, step),
    FOREIGN KEY (tenant_id, enrollment_id)
        REFERENCES journey_enrollments (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX journey_step_runs_journey_idx ON journey_step_runs (tenant_id, journey_id, version, step_id);

ALTER TABLE journeys ENABLE ROW LEVEL SECURITY;
ALTER TABLE journeys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON journeys TO @app_role@
    USING (tenant_id = swiftmail_current_tenant())
    WITH CHECK (tenant_id = swiftmail_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON journeys TO @app_role@;
CREATE POLICY system_machinery ON journeys TO @system_role@ USING (true) WITH CHECK (true);
GRANT SELECT ON journeys TO @system_role@;

ALTER TABLE journey_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE journey_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON journey_versions TO @app_role@
    USING (tenant_id = swiftmail_current_tenant())
    WITH CHECK (tenant_id = swiftmail_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON journey_versions TO @app_role@;
CREATE POLICY system_machinery ON journey_versions TO @system_role@ USING (true) WITH CHECK (true);
GRANT SELECT ON journey_versions TO @system_role@;

ALTER TABLE journey_enrollments ENABLE ROW LEVEL SECURITY;
ALTER TABLE journey_enrollments FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON journey_enrollments TO @app_role@
    USING (tenant_id = swiftmail_current_tenant())
    WITH CHECK (tenant_id = swiftmail_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON journey_enrollments TO @app_role@;
-- The claim leases due positions across tenants; the steps run as the tenant.
CREATE POLICY system_machinery ON journey_enrollments TO @system_role@
    USING (true) WITH CHECK (true);
GRANT SELECT, UPDATE ON journey_enrollments TO @system_role@;

ALTER TABLE journey_step_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE journey_step_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON journey_step_runs TO @app_role@
    USING (tenant_id = swiftmail_current_tenant())
    WITH CHECK (tenant_id = swiftmail_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON journey_step_runs TO @app_role@;
CREATE POLICY system_machinery ON journey_step_runs TO @system_role@
    USING (true) WITH CHECK (true);
GRANT SELECT ON journey_step_runs TO @system_role@;

-- Journey emails are ledger rows like any other (same outbox, renderer, transports).
ALTER TABLE messages DROP CONSTRAINT messages_kind_check;
ALTER TABLE messages ADD CONSTRAINT messages_kind_check
    CHECK (kind IN ('campaign', 'transactional', 'test', 'confirmation', 'journey'));
