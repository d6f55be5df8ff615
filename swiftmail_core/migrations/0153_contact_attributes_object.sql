-- 0153: contact attributes are always a JSON object.
--
-- POST /v1/contacts/bulk without "attributes" stored JSON null for a new contact
-- and turned an existing contact's attributes into an array ({...} || null);
-- PATCH then failed and every message to the contact failed to render. Repair
-- such rows (the objects an array holds, merged in order; anything else becomes
-- {}) and refuse them from now on. The owner lifts FORCE RLS for the repair only
-- (it has no policy of its own), inside this migration's transaction.
ALTER TABLE contacts NO FORCE ROW LEVEL SECURITY;
ALTER TABLE contacts DROP CONSTRAINT IF EXISTS contacts_attributes_object;
UPDATE contacts c SET attributes = coalesce((
        SELECT jsonb_object_agg(pair.key, pair.value ORDER BY element.position, pair.key)
        FROM jsonb_array_elements(c.attributes) WITH ORDINALITY AS element (value, position),
             jsonb_each(element.value) AS pair
        WHERE jsonb_typeof(element.value) = 'object'), '{}'::jsonb),
    updated_at = now()
WHERE jsonb_typeof(c.attributes) = 'array';
UPDATE contacts SET attributes = '{}'::jsonb, updated_at = now()
WHERE jsonb_typeof(attributes) <> 'object';
ALTER TABLE contacts ADD CONSTRAINT contacts_attributes_object
    CHECK (jsonb_typeof(attributes) = 'object');
ALTER TABLE contacts FORCE ROW LEVEL SECURITY;
