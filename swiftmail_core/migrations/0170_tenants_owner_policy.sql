-- 0170: the owner role may read tenants under FORCE row-level security.
--
-- PostgreSQL validates a new foreign key to tenants as the owner of tenants;
-- with FORCE RLS and no policy for the owner it saw no tenant, so Citus could
-- not move a shard of the partitioned events table (its foreign key to the
-- tenants reference table is validated on the new node: "is not present in
-- table tenants_..."). The owner owns the schema; this reveals nothing new.
CREATE POLICY owner_checks ON tenants TO @owner_role@ USING (true);
