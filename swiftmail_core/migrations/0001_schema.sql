-- 0001: the whole product's data model.
--
-- Conventions (checked by `swiftmail doctor` and tests/core/test_isolation.py):
--   * every tenant table has tenant_id, and its primary key, unique constraints
--     and foreign keys lead with it (Citus-ready: tenant_id is the distribution
--     column);
--   * every tenant table has ENABLE + FORCE ROW LEVEL SECURITY and a policy for
--     the app role whose USING and WITH CHECK compare tenant_id with
--     swiftmail_current_tenant(), which is NULL (no rows, no writes) unless
--     tenant_tx set it with set_config(..., true);
--   * the system role gets its own explicit policies, only on the tables the
--     cross-tenant machinery needs.
-- @owner_role@, @app_role@ and @system_role@ are replaced by quoted role names.

-- APPSEC: fails closed. An unset or empty setting yields NULL, and NULL never
-- equals a tenant_id, so reads see nothing and writes fail WITH CHECK.
CREATE FUNCTION swiftmail_current_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('swiftmail.tenant_id', true), '')::uuid $$;

-- Tenants -------------------------------------------------------------------

CREATE TABLE tenants (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    language text NOT NULL DEFAULT 'en',
    send_rate_per_second integer NOT NULL DEFAULT 100 CHECK (send_rate_per_second > 0),
    daily_quota bigint NOT NULL DEFAULT 100000 CHECK (daily_quota >= 0),
    settings jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Users are people, global across tenants; memberships give them roles.
CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL CHECK (position('@' in email) > 1),
    email_lower text GENERATED ALWAYS AS (lower(email)) STORED UNIQUE,
    name text NOT NULL DEFAULT '',
    password_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz
);

CREATE TABLE memberships (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role text NOT NULL CHECK (role IN ('owner', 'admin', 'editor', 'viewer')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);

CREATE TABLE api_keys (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    name text NOT NULL DEFAULT '',
    lookup_id text NOT NULL,            -- the public part after sm_live_
    secret_hash bytea NOT NULL,          -- SHA-256 of the whole key
    role text NOT NULL CHECK (role IN ('owner', 'admin', 'editor', 'viewer')),
    scopes text[] NOT NULL DEFAULT '{}',
    created_by uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    expires_at timestamptz,
    revoked_at timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, lookup_id)
);
-- Authentication looks a key up before its tenant is known (system role).
CREATE INDEX api_keys_lookup_idx ON api_keys (lookup_id);

-- Contacts, lists, subscriptions ---------------------------------------------

CREATE TABLE contacts (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    email text NOT NULL CHECK (length(email) <= 254 AND position('@' in email) > 1),
    email_lower text GENERATED ALWAYS AS (lower(email)) STORED,
    name text NOT NULL DEFAULT '',
    attributes jsonb NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'unsubscribed', 'bounced', 'complained', 'blocklisted')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, email_lower)
);
CREATE INDEX contacts_created_idx ON contacts (tenant_id, created_at, id);
CREATE INDEX contacts_attributes_idx ON contacts USING gin (attributes jsonb_path_ops);

CREATE TABLE lists (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '',
    double_opt_in boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);

CREATE TABLE subscriptions (
    tenant_id uuid NOT NULL,
    list_id uuid NOT NULL,
    contact_id uuid NOT NULL,
    status text NOT NULL DEFAULT 'unconfirmed'
        CHECK (status IN ('unconfirmed', 'confirmed', 'unsubscribed')),
    consent_source text NOT NULL DEFAULT '',
    consent_at timestamptz,
    consent_ip inet,
    confirmed_at timestamptz,
    unsubscribed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, list_id, contact_id),
    FOREIGN KEY (tenant_id, list_id) REFERENCES lists (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX subscriptions_contact_idx ON subscriptions (tenant_id, contact_id);
CREATE INDEX subscriptions_confirmed_idx ON subscriptions (tenant_id, list_id, contact_id)
    WHERE status = 'confirmed';

-- Templates and sending domains ----------------------------------------------

CREATE TABLE templates (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    subject text NOT NULL DEFAULT '',
    preheader text NOT NULL DEFAULT '',
    html text NOT NULL DEFAULT '',
    text text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);

CREATE TABLE sending_domains (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    domain text NOT NULL CHECK (domain = lower(domain) AND position('.' in domain) > 1),
    dkim_selector text NOT NULL,
    dkim_private_key_encrypted bytea NOT NULL,   -- Fernet, keyed from secret_key
    dkim_public_key text NOT NULL,
    dkim_ed25519_private_key_encrypted bytea,
    dkim_ed25519_public_key text,
    return_path_domain text NOT NULL DEFAULT '',
    tracking_domain text NOT NULL DEFAULT '',
    verification jsonb NOT NULL DEFAULT '{}',    -- per-record state from the last check
    verified_at timestamptz,
    warmup_plan jsonb NOT NULL DEFAULT '{}',
    warmup_started_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, domain)
);
-- The relay finds a domain's key by name, before it knows the tenant.
CREATE INDEX sending_domains_domain_idx ON sending_domains (domain);

-- Campaigns ------------------------------------------------------------------

CREATE TABLE campaigns (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status text NOT NULL DEFAULT 'draft'
        CHECK (status IN ('draft', 'scheduled', 'sending', 'paused', 'sent', 'cancelled')),
    template_id uuid,
    subject text NOT NULL DEFAULT '',
    preheader text NOT NULL DEFAULT '',
    html text NOT NULL DEFAULT '',
    text text NOT NULL DEFAULT '',
    from_name text NOT NULL DEFAULT '',
    from_email text NOT NULL DEFAULT '',
    reply_to text NOT NULL DEFAULT '',
    headers jsonb NOT NULL DEFAULT '{}',
    sending_domain_id uuid,
    transport text NOT NULL DEFAULT 'relay',
    list_ids uuid[] NOT NULL DEFAULT '{}',
    tracking_enabled boolean NOT NULL DEFAULT true,
    scheduled_at timestamptz,
    started_at timestamptz,
    audience_resolved_at timestamptz,
    finished_at timestamptz,
    recipient_count bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, template_id) REFERENCES templates (tenant_id, id) ON DELETE SET NULL (template_id),
    FOREIGN KEY (tenant_id, sending_domain_id)
        REFERENCES sending_domains (tenant_id, id) ON DELETE SET NULL (sending_domain_id)
);
CREATE INDEX campaigns_due_idx ON campaigns (scheduled_at) WHERE status = 'scheduled';
CREATE INDEX campaigns_created_idx ON campaigns (tenant_id, created_at, id);

-- The per-recipient message ledger: the outbox. Every email is a row here
-- before anything is queued; workers claim rows with FOR UPDATE SKIP LOCKED
-- and a lease, and a sweeper reclaims expired leases.
CREATE TABLE messages (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id bigint GENERATED ALWAYS AS IDENTITY,
    campaign_id uuid,
    contact_id uuid,
    email text NOT NULL,
    kind text NOT NULL DEFAULT 'campaign' CHECK (kind IN ('campaign', 'transactional', 'test', 'confirmation')),
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'sending', 'accepted', 'deferred', 'delivered',
                          'bounced', 'failed', 'suppressed', 'cancelled', 'expired')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_owner text,
    lease_expires_at timestamptz,
    message_id text,                  -- the Message-ID header, derived from this row
    transport text NOT NULL DEFAULT '',
    provider_message_id text,
    last_error text,
    payload jsonb NOT NULL DEFAULT '{}',  -- per-message data (transactional template data)
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES campaigns (tenant_id, id) ON DELETE CASCADE
);
-- Exactly one campaign message per recipient.
CREATE UNIQUE INDEX messages_campaign_contact_uq ON messages (tenant_id, campaign_id, contact_id)
    WHERE kind = 'campaign';
CREATE INDEX messages_campaign_idx ON messages (tenant_id, campaign_id, id);
-- Claiming is cross-tenant (system role): a small partial index over due work.
CREATE INDEX messages_due_idx ON messages (next_attempt_at)
    WHERE status IN ('queued', 'deferred');
CREATE INDEX messages_lease_idx ON messages (lease_expires_at) WHERE status = 'sending';
CREATE INDEX messages_provider_idx ON messages (provider_message_id)
    WHERE provider_message_id IS NOT NULL;

CREATE TABLE links (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id bigint GENERATED ALWAYS AS IDENTITY,
    campaign_id uuid,
    url text NOT NULL CHECK (url ~* '^https?://'),
    label text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, campaign_id, url),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES campaigns (tenant_id, id) ON DELETE CASCADE
);

-- Events: append-only, partitioned by month so appends stay cheap and old
-- months can be detached. Analytics read the rollups, never COUNT(*) here.
CREATE TABLE events (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id bigint GENERATED ALWAYS AS IDENTITY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    type text NOT NULL CHECK (type IN ('accepted', 'delivered', 'deferred', 'bounced',
        'expired', 'opened', 'clicked', 'complained', 'unsubscribed', 'subscribed',
        'confirmed', 'webhook_disabled')),
    message_id bigint,
    campaign_id uuid,
    contact_id uuid,
    link_id bigint,
    bounce_class text CHECK (bounce_class IS NULL OR bounce_class IN
        ('hard', 'soft', 'policy', 'mailbox_full', 'throttled', 'expired')),
    is_machine boolean NOT NULL DEFAULT false,
    recipient_domain text,
    source_key text,                  -- idempotency of ingestion (stream entry, provider event id)
    detail jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, occurred_at, id),
    UNIQUE (tenant_id, occurred_at, source_key)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX events_message_idx ON events (tenant_id, message_id);
CREATE INDEX events_campaign_idx ON events (tenant_id, campaign_id, occurred_at);

-- Incremental rollups the analytics read (updated as events arrive).
CREATE TABLE campaign_rollups (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    campaign_id uuid NOT NULL,
    bucket timestamptz NOT NULL,      -- hour
    metric text NOT NULL,             -- e.g. delivered, bounced.hard, opened.human, clicked.machine
    dimension text NOT NULL DEFAULT '',  -- link id, recipient domain, or ''
    value bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, campaign_id, bucket, metric, dimension)
);

CREATE TABLE suppressions (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email_lower text NOT NULL CHECK (email_lower = lower(email_lower)),
    reason text NOT NULL CHECK (reason IN ('hard_bounce', 'complaint', 'unsubscribe',
                                          'manual', 'import', 'blocklist')),
    source text NOT NULL DEFAULT '',
    detail text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    PRIMARY KEY (tenant_id, email_lower)
);

-- Webhooks -------------------------------------------------------------------

CREATE TABLE webhooks (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    url text NOT NULL,
    event_types text[] NOT NULL DEFAULT '{}',
    secret_encrypted bytea NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    disabled_reason text,
    consecutive_failures integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE webhook_deliveries (
    tenant_id uuid NOT NULL,
    id bigint GENERATED ALWAYS AS IDENTITY,
    webhook_id uuid NOT NULL,
    event_type text NOT NULL,
    payload jsonb NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivering',
        'succeeded', 'failed', 'abandoned')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz,
    response_status integer,
    response_excerpt text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, webhook_id) REFERENCES webhooks (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'delivering');
CREATE INDEX webhook_deliveries_log_idx ON webhook_deliveries (tenant_id, webhook_id, id);

-- API plumbing ---------------------------------------------------------------

CREATE TABLE idempotency_keys (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash bytea NOT NULL,
    method text NOT NULL,
    path text NOT NULL,
    response_status integer,          -- NULL while the first request is in flight
    response_body bytea,
    response_headers jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL DEFAULT now() + interval '24 hours',
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (expires_at);

CREATE TABLE jobs (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    kind text NOT NULL CHECK (kind IN ('import_contacts', 'import_suppressions',
        'export_contacts', 'export_suppressions', 'export_ledger', 'export_stats')),
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    params jsonb NOT NULL DEFAULT '{}',
    progress_done bigint NOT NULL DEFAULT 0,
    progress_total bigint,
    rows_ok bigint NOT NULL DEFAULT 0,
    rows_failed bigint NOT NULL DEFAULT 0,
    input_key text,                   -- storage key of the uploaded file
    result_key text,                  -- storage key of the export or error report
    error text,
    lease_expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX jobs_due_idx ON jobs (created_at) WHERE status IN ('queued', 'running');
