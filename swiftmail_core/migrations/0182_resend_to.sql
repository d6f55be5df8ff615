-- 0182: a row whose hand-off answer was lost remembers where it went, and is resent there only.
--
-- A transport that can make a resend harmless (the relay transport's network mode: the relay
-- drops a ledger row it already took) answers such a row with the receiver that may have it.
-- The worker keeps it 'deferred' and resends it to that same receiver, never another one
-- (which could deliver it twice), until resend_until; after that it stays 'unknown' and
-- expires as before (sending.outbox.record_results).
ALTER TABLE messages ADD COLUMN resend_to text;
ALTER TABLE messages ADD COLUMN resend_until timestamptz;
