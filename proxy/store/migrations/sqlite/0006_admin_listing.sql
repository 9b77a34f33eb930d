-- 0006_admin_listing: indexes for the admin API: listing invocations newest first with keyset
-- pagination and filters, purging ended invocations, counting invocations by status.
--
-- The listing orders by (created_at_ms, id), a total order, so a page can start right after the
-- last invocation of the previous one. The index of the creation time alone is replaced by one
-- that carries the id too (it serves every query the old one did).
DROP INDEX invocations_by_created;

CREATE INDEX invocations_by_created_id ON invocations (created_at_ms, id);

-- The invocations of a service (and handler), newest first.
CREATE INDEX invocations_by_service ON invocations (service, created_at_ms, id);

-- Only the ended invocations, by status and age: listing a terminal status, counting them by
-- status, and purging them. Queries must repeat this exact WHERE term for SQLite to use the index.
CREATE INDEX invocations_ended
    ON invocations (status, created_at_ms, id)
    WHERE status IN ('completed', 'failed');
