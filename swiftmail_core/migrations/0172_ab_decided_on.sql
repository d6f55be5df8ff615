-- 0172: what an A/B test's winner was decided on: each variant's counts at the
-- moment of the decision (the results shown later include the rest of the
-- audience, sent the winner).
ALTER TABLE campaigns ADD COLUMN ab_decided_on jsonb;
