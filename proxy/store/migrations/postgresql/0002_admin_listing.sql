-- 0002_admin_listing: the indexes of SQLite's 0006_admin_listing, for the admin API: listing
-- invocations newest first by (created_at_ms, id) with keyset pagination and filters, purging
-- ended invocations, counting invocations by status.
DROP INDEX invocations_by_created;
CREATE INDEX invocations_by_created_id ON invocations (created_at_ms, id);
CREATE INDEX invocations_by_service ON invocations (service, created_at_ms, id);
CREATE INDEX invocations_ended
    ON invocations (status, created_at_ms, id)
    WHERE status IN ('completed', 'failed');
