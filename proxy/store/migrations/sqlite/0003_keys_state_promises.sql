-- 0003_keys_state_promises: virtual objects and workflows. Key locks and
-- their queues, keyed state, durable promises and the entries waiting on them.
--
-- `invocations` is rebuilt once more (the status CHECK gains 'queued'; see
-- 0002 for why and how): same columns, rowids kept, plus `exclusive`.

CREATE TABLE invocations_new (
    id                   TEXT PRIMARY KEY NOT NULL,
    service              TEXT NOT NULL,
    handler              TEXT NOT NULL,
    key                  TEXT,
    status               TEXT NOT NULL
        CHECK (status IN (
            'scheduled', 'queued', 'pending', 'running', 'suspended', 'backing_off', 'completed', 'failed'
        )),
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
    completed_at_ms      INTEGER,
    -- Not a foreign key: a parent may be purged before its callees.
    parent_id            TEXT,
    parent_index         INTEGER,
    parent_awaits        INTEGER NOT NULL DEFAULT 0 CHECK (parent_awaits IN (0, 1)),
    cancel_requested     INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    waiting_on           TEXT,
    -- 1: takes the lock of (service, key) before it runs (only meaningful with a key).
    exclusive            INTEGER NOT NULL DEFAULT 0 CHECK (exclusive IN (0, 1)),
    CHECK ((parent_id IS NULL) = (parent_index IS NULL))
);

INSERT INTO invocations_new (
    rowid, id, service, handler, key, status, input, headers, deployment_id, idempotency_key, attempt,
    journal_len, output, failure_code, failure_message, last_failure_code, last_failure_message,
    next_run_at_ms, created_at_ms, modified_at_ms, completed_at_ms, parent_id, parent_index, parent_awaits,
    cancel_requested, waiting_on
)
SELECT
    rowid, id, service, handler, key, status, input, headers, deployment_id, idempotency_key, attempt,
    journal_len, output, failure_code, failure_message, last_failure_code, last_failure_message,
    next_run_at_ms, created_at_ms, modified_at_ms, completed_at_ms, parent_id, parent_index, parent_awaits,
    cancel_requested, waiting_on
FROM invocations ORDER BY rowid;

-- Also drops invocations_idempotency, invocations_unfinished, invocations_by_created and invocations_by_parent.
DROP TABLE invocations;

ALTER TABLE invocations_new RENAME TO invocations;

CREATE UNIQUE INDEX invocations_idempotency
    ON invocations (service, handler, coalesce(key, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- As in 0002, with 'queued'. Queries must repeat this exact WHERE term for SQLite to use the index.
CREATE INDEX invocations_unfinished
    ON invocations (status, created_at_ms)
    WHERE status IN ('scheduled', 'queued', 'pending', 'running', 'suspended', 'backing_off');

CREATE INDEX invocations_by_created ON invocations (created_at_ms);

CREATE INDEX invocations_by_parent ON invocations (parent_id) WHERE parent_id IS NOT NULL;

-- The invocations of an object or workflow key (a `key = ?` term implies the WHERE).
CREATE INDEX invocations_by_key ON invocations (service, key) WHERE key IS NOT NULL;

-- The workflow runs of a service by the time they ended, for purge_workflows.
-- Queries must repeat this exact WHERE term for SQLite to use the index.
CREATE INDEX invocations_workflow_runs
    ON invocations (service, completed_at_ms)
    WHERE handler = 'run' AND idempotency_key = 'run';

-- Who holds the lock of an object or workflow key: an exclusive invocation,
-- from the moment it becomes runnable until it ends. No row: the key is free.
-- The reference has no ON DELETE: an invocation holding a lock cannot be deleted.
CREATE TABLE key_locks (
    service   TEXT NOT NULL,
    key       TEXT NOT NULL,
    holder_id TEXT NOT NULL REFERENCES invocations (id),
    PRIMARY KEY (service, key)
) WITHOUT ROWID;

CREATE UNIQUE INDEX key_locks_by_holder ON key_locks (holder_id);

-- The exclusive invocations waiting for a key's lock (status 'queued'), in
-- arrival order: seq is an AUTOINCREMENT rowid, so it only ever grows (never a
-- reused number, unlike a plain rowid, and never a clock).
CREATE TABLE key_queue (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    service       TEXT NOT NULL,
    key           TEXT NOT NULL,
    invocation_id TEXT NOT NULL REFERENCES invocations (id) ON DELETE CASCADE
);

CREATE INDEX key_queue_order ON key_queue (service, key, seq);

CREATE UNIQUE INDEX key_queue_by_invocation ON key_queue (invocation_id);

-- The state of an object or workflow key: JSON values by name.
CREATE TABLE state (
    service TEXT NOT NULL,
    key     TEXT NOT NULL,
    name    TEXT NOT NULL,
    value   BLOB NOT NULL,
    PRIMARY KEY (service, key, name)
) WITHOUT ROWID;

-- The durable promises of a workflow key, once completed (a promise nobody
-- completed yet has no row): resolved with value (JSON) or rejected with the
-- failure. Completed once, never updated.
CREATE TABLE promises (
    service         TEXT NOT NULL,
    key             TEXT NOT NULL,
    name            TEXT NOT NULL,
    value           BLOB,
    failure_code    INTEGER,
    failure_message TEXT,
    completed_at_ms INTEGER NOT NULL,
    PRIMARY KEY (service, key, name),
    CHECK ((value IS NULL) <> (failure_code IS NULL))
) WITHOUT ROWID;

CREATE TRIGGER promises_are_immutable BEFORE UPDATE ON promises
BEGIN
    SELECT RAISE(ABORT, 'promises are immutable');
END;

-- The get_promise entries waiting for a promise that is not completed yet;
-- completing the promise completes each of them and deletes the rows.
CREATE TABLE promise_waiters (
    service       TEXT NOT NULL,
    key           TEXT NOT NULL,
    name          TEXT NOT NULL,
    invocation_id TEXT NOT NULL,
    idx           INTEGER NOT NULL,
    PRIMARY KEY (service, key, name, invocation_id, idx),
    FOREIGN KEY (invocation_id, idx) REFERENCES journal (invocation_id, idx) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE INDEX promise_waiters_by_entry ON promise_waiters (invocation_id, idx);
