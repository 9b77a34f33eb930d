-- Leases: which proxy instance runs an invocation's current attempt, and until when that holds
-- unless renewed. A single SQLite proxy takes every running invocation back when it starts; the
-- columns exist so that both backends keep the same rows.
ALTER TABLE invocations ADD COLUMN lease_owner TEXT;

ALTER TABLE invocations ADD COLUMN lease_until_ms INTEGER;
