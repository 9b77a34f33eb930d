-- 0001_initial: the first schema of the journal store.
--
-- All timestamps are integer epoch milliseconds supplied by the proxy. The
-- schema_version table is created by proxy/store/migrate.py, not here.

-- Per-database values, such as the secret that signs attempt tokens.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) WITHOUT ROWID;

-- A deployment is one version of handler code: its manifest, served by one or
-- more endpoints (instances). Deployments are kept even without endpoints
-- because invocations stay pinned to the deployment that started them.
CREATE TABLE deployments (
    id            TEXT PRIMARY KEY NOT NULL,
    manifest      BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE deployment_endpoints (
    uri           TEXT PRIMARY KEY NOT NULL,
    deployment_id TEXT NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    created_at_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX deployment_endpoints_by_deployment ON deployment_endpoints (deployment_id);

-- Where new invocations of a service go: the latest deployment naming it.
CREATE TABLE services (
    name           TEXT PRIMARY KEY NOT NULL,
    deployment_id  TEXT NOT NULL REFERENCES deployments (id),
    manifest       BLOB NOT NULL,
    modified_at_ms INTEGER NOT NULL
);

CREATE INDEX services_by_deployment ON services (deployment_id);

CREATE TABLE invocations (
    id                   TEXT PRIMARY KEY NOT NULL,
    service              TEXT NOT NULL,
    handler              TEXT NOT NULL,
    key                  TEXT,
    status               TEXT NOT NULL
        CHECK (status IN ('pending', 'running', 'backing_off', 'completed', 'failed')),
    input                BLOB NOT NULL,
    headers              TEXT NOT NULL DEFAULT '{}', -- JSON object of string values
    deployment_id        TEXT NOT NULL,
    idempotency_key      TEXT,
    attempt              INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    journal_len          INTEGER NOT NULL DEFAULT 0 CHECK (journal_len >= 0),
    output               BLOB,
    failure_code         INTEGER,
    failure_message      TEXT,
    last_failure_code    INTEGER,
    last_failure_message TEXT,
    next_run_at_ms       INTEGER,
    created_at_ms        INTEGER NOT NULL,
    modified_at_ms       INTEGER NOT NULL,
    completed_at_ms      INTEGER
);

-- An idempotency key is scoped to (service, handler, key); a NULL key and an
-- empty key are the same scope.
CREATE UNIQUE INDEX invocations_idempotency
    ON invocations (service, handler, coalesce(key, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Only the unfinished invocations, which the scheduler scans on every start.
-- Queries must repeat this exact WHERE term for SQLite to use the index.
CREATE INDEX invocations_active
    ON invocations (status, next_run_at_ms)
    WHERE status IN ('pending', 'running', 'backing_off');

CREATE INDEX invocations_by_created ON invocations (created_at_ms);

-- The journal is append-only: a row is inserted once at journal_len and never
-- upserted, updated or replaced. The trigger makes an accidental UPDATE fail.
CREATE TABLE journal (
    invocation_id TEXT NOT NULL REFERENCES invocations (id) ON DELETE CASCADE,
    idx           INTEGER NOT NULL CHECK (idx >= 0),
    kind          TEXT NOT NULL,
    name          TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    entry         BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (invocation_id, idx)
) WITHOUT ROWID;

CREATE TRIGGER journal_is_append_only BEFORE UPDATE ON journal
BEGIN
    SELECT RAISE(ABORT, 'journal entries are immutable');
END;

CREATE TABLE attempts (
    invocation_id   TEXT NOT NULL REFERENCES invocations (id) ON DELETE CASCADE,
    attempt         INTEGER NOT NULL,
    endpoint        TEXT,
    started_at_ms   INTEGER NOT NULL,
    ended_at_ms     INTEGER,
    outcome         TEXT CHECK (outcome IN ('completed', 'failed', 'retry', 'abandoned')),
    failure_code    INTEGER,
    failure_message TEXT,
    PRIMARY KEY (invocation_id, attempt)
) WITHOUT ROWID;
