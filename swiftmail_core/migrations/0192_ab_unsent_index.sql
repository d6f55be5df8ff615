-- 0192: the index of a campaign's unsent rows holds A/B test messages only
-- (issue #16, docs/benchmarks.md "Audience resolution").
--
-- Its one reader is the A/B decision (swiftmail_core/ab_tests/decision.py):
-- a test is decided once none of its test messages is queued or being sent.
-- Before the decision those rows all carry their variant; every other ledger
-- row (a plain campaign's million, a test's waiting share, transactional and
-- journey mail) has none and no longer pays an index entry when it is
-- written: one B-tree entry fewer per audience row. The decision's query
-- names `variant IS NOT NULL`, which lets the planner use this index.
-- oldest-compatible-code: 0176 (only an index: older code's A/B decision, which does not name the variant, still answers right, walking the campaign's rows instead)
DROP INDEX messages_campaign_unsent_idx;
CREATE INDEX messages_ab_unsent_idx ON messages (tenant_id, campaign_id)
    WHERE status IN ('queued', 'sending') AND variant IS NOT NULL;
