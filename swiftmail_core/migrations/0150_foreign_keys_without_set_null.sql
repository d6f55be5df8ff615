-- Citus refuses ON DELETE SET NULL on a foreign key that includes the
-- distribution column (tenant_id). Campaigns keep these two keys as plain
-- (NO ACTION) foreign keys; deleting a template or a sending domain clears the
-- campaigns' reference first, in the same transaction (web/resources).
ALTER TABLE campaigns DROP CONSTRAINT campaigns_tenant_id_template_id_fkey;
ALTER TABLE campaigns ADD CONSTRAINT campaigns_tenant_id_template_id_fkey
    FOREIGN KEY (tenant_id, template_id) REFERENCES templates (tenant_id, id);
ALTER TABLE campaigns DROP CONSTRAINT campaigns_tenant_id_sending_domain_id_fkey;
ALTER TABLE campaigns ADD CONSTRAINT campaigns_tenant_id_sending_domain_id_fkey
    FOREIGN KEY (tenant_id, sending_domain_id) REFERENCES sending_domains (tenant_id, id);
