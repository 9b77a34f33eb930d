-- The journal store on PostgreSQL: the same tables and columns as the SQLite schema at its
-- version 5, so that one body of SQL serves both. Flags are 0/1 integers and times are
-- milliseconds since the epoch in BIGINT, as in SQLite.

-- Lets the shared SQL write CAST(? AS BLOB) where PostgreSQL must be told a parameter's type.
CREATE DOMAIN blob AS BYTEA;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value BYTEA NOT NULL
);

CREATE TABLE deployments (
    id            TEXT PRIMARY KEY NOT NULL,
    manifest      BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE deployment_endpoints (
    uri           TEXT PRIMARY KEY NOT NULL,
    deployment_id TEXT NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX deployment_endpoints_by_deployment ON deployment_endpoints (deployment_id);

CREATE TABLE services (
    name           TEXT PRIMARY KEY NOT NULL,
    deployment_id  TEXT NOT NULL REFERENCES deployments (id),
    manifest       BYTEA NOT NULL,
    modified_at_ms BIGINT NOT NULL
);
CREATE INDEX services_by_deployment ON services (deployment_id);

CREATE TABLE invocations (
    id                   TEXT PRIMARY KEY NOT NULL,
    -- Arrival order among invocations created in the same millisecond (SQLite's rowid).
    seq                  BIGINT GENERATED ALWAYS AS IDENTITY,
    service              TEXT NOT NULL,
    handler              TEXT NOT NULL,
    key                  TEXT,
    status               TEXT NOT NULL
        CHECK (status IN (
            'scheduled', 'queued', 'pending', 'running', 'suspended', 'backing_off', 'paused', 'completed', 'failed'
        )),
    input                BYTEA NOT NULL,
    headers              TEXT NOT NULL DEFAULT '{}',
    deployment_id        TEXT NOT NULL,
    idempotency_key      TEXT,
    attempt              INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    journal_len          INTEGER NOT NULL DEFAULT 0 CHECK (journal_len >= 0),
    output               BYTEA,
    failure_code         INTEGER,
    failure_message      TEXT,
    last_failure_code    INTEGER,
    last_failure_message TEXT,
    next_run_at_ms       BIGINT,
    created_at_ms        BIGINT NOT NULL,
    modified_at_ms       BIGINT NOT NULL,
    completed_at_ms      BIGINT,
    -- Not a foreign key: a parent may be purged before its callees.
    parent_id            TEXT,
    parent_index         INTEGER,
    parent_awaits        INTEGER NOT NULL DEFAULT 0 CHECK (parent_awaits IN (0, 1)),
    cancel_requested     INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    waiting_on           TEXT,
    exclusive            INTEGER NOT NULL DEFAULT 0 CHECK (exclusive IN (0, 1)),
    attempts_at_resume   INTEGER NOT NULL DEFAULT 0,
    -- The instance running the current attempt, and until when (renewed while it lives).
    lease_owner          TEXT,
    lease_until_ms       BIGINT,
    CHECK ((parent_id IS NULL) = (parent_index IS NULL)),
    CHECK (attempts_at_resume BETWEEN 0 AND attempt)
);
CREATE UNIQUE INDEX invocations_idempotency
    ON invocations (service, handler, coalesce(key, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX invocations_unfinished
    ON invocations (status, created_at_ms)
    WHERE status IN ('scheduled', 'queued', 'pending', 'running', 'suspended', 'backing_off', 'paused');
CREATE INDEX invocations_by_created ON invocations (created_at_ms);
CREATE INDEX invocations_by_parent ON invocations (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX invocations_by_key ON invocations (service, key) WHERE key IS NOT NULL;
CREATE INDEX invocations_workflow_runs
    ON invocations (service, completed_at_ms)
    WHERE handler = 'run' AND idempotency_key = 'run';
-- Lease renewal (by owner) and takeover (by expiry) look only at running invocations.
CREATE INDEX invocations_leases ON invocations (lease_owner, lease_until_ms) WHERE status = 'running';

CREATE TABLE attempts (
    invocation_id   TEXT NOT NULL REFERENCES invocations (id) ON DELETE CASCADE,
    attempt         INTEGER NOT NULL,
    endpoint        TEXT,
    started_at_ms   BIGINT NOT NULL,
    ended_at_ms     BIGINT,
    outcome         TEXT CHECK (
        outcome IN ('completed', 'failed', 'retry', 'abandoned', 'suspended', 'resumed', 'killed', 'paused')
    ),
    failure_code    INTEGER,
    failure_message TEXT,
    PRIMARY KEY (invocation_id, attempt)
);

CREATE TABLE journal (
    invocation_id TEXT NOT NULL REFERENCES invocations (id) ON DELETE CASCADE,
    idx           INTEGER NOT NULL CHECK (idx >= 0),
    kind          TEXT NOT NULL,
    name          TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    entry         BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (invocation_id, idx)
);

CREATE TABLE completions (
    invocation_id   TEXT NOT NULL,
    idx             INTEGER NOT NULL CHECK (idx >= 0),
    result          BYTEA,
    failure_code    INTEGER,
    failure_message TEXT,
    created_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (invocation_id, idx),
    FOREIGN KEY (invocation_id, idx) REFERENCES journal (invocation_id, idx) ON DELETE CASCADE,
    CHECK (failure_code IS NULL OR result IS NULL)
);

CREATE TABLE timers (
    invocation_id TEXT NOT NULL REFERENCES invocations (id) ON DELETE CASCADE,
    idx           INTEGER NOT NULL CHECK (idx >= -1),
    due_at_ms     BIGINT NOT NULL,
    PRIMARY KEY (invocation_id, idx)
);
CREATE INDEX timers_by_due ON timers (due_at_ms);

CREATE TABLE key_locks (
    service   TEXT NOT NULL,
    key       TEXT NOT NULL,
    holder_id TEXT NOT NULL REFERENCES invocations (id),
    PRIMARY KEY (service, key)
);
CREATE UNIQUE INDEX key_locks_by_holder ON key_locks (holder_id);

CREATE TABLE key_queue (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service       TEXT NOT NULL,
    key           TEXT NOT NULL,
    invocation_id TEXT NOT NULL REFERENCES invocations (id) ON DELETE CASCADE
);
CREATE INDEX key_queue_order ON key_queue (service, key, seq);
CREATE UNIQUE INDEX key_queue_by_invocation ON key_queue (invocation_id);

CREATE TABLE state (
    service TEXT NOT NULL,
    key     TEXT NOT NULL,
    name    TEXT NOT NULL,
    value   BYTEA NOT NULL,
    PRIMARY KEY (service, key, name)
);

CREATE TABLE promises (
    service         TEXT NOT NULL,
    key             TEXT NOT NULL,
    name            TEXT NOT NULL,
    value           BYTEA,
    failure_code    INTEGER,
    failure_message TEXT,
    completed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (service, key, name),
    CHECK ((value IS NULL) <> (failure_code IS NULL))
);

CREATE TABLE promise_waiters (
    service       TEXT NOT NULL,
    key           TEXT NOT NULL,
    name          TEXT NOT NULL,
    invocation_id TEXT NOT NULL,
    idx           INTEGER NOT NULL,
    PRIMARY KEY (service, key, name, invocation_id, idx),
    FOREIGN KEY (invocation_id, idx) REFERENCES journal (invocation_id, idx) ON DELETE CASCADE
);
CREATE INDEX promise_waiters_by_entry ON promise_waiters (invocation_id, idx);

-- Journal entries, completions and promises never change once written.
CREATE FUNCTION durable_refuse_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are immutable', TG_TABLE_NAME;
END
$$;
CREATE TRIGGER journal_is_append_only BEFORE UPDATE ON journal
    FOR EACH ROW EXECUTE FUNCTION durable_refuse_update();
CREATE TRIGGER completions_are_immutable BEFORE UPDATE ON completions
    FOR EACH ROW EXECUTE FUNCTION durable_refuse_update();
CREATE TRIGGER promises_are_immutable BEFORE UPDATE ON promises
    FOR EACH ROW EXECUTE FUNCTION durable_refuse_update();
