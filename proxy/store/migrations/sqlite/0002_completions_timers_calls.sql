-- 0002_completions_timers_calls: completions, durable timers, calls between
-- invocations, suspension and cancellation.
--
-- SQLite cannot change a CHECK constraint in place, so `invocations` and
-- `attempts` are rebuilt the documented way (https://sqlite.org/lang_altertable.html#otheralter):
-- create the new table, copy the rows (keeping their rowids), drop the old one,
-- rename the new one. migrate.py runs every migration with foreign keys off and
-- runs PRAGMA foreign_key_check before committing: with them on, dropping
-- `invocations` would cascade-delete the journal. The `journal` table refers
-- to `invocations` by name, so it refers to the rebuilt table afterwards.

CREATE TABLE invocations_new (
    id                   TEXT PRIMARY KEY NOT NULL,
    service              TEXT NOT NULL,
    handler              TEXT NOT NULL,
    key                  TEXT,
    status               TEXT NOT NULL
        CHECK (status IN ('scheduled', 'pending', 'running', 'suspended', 'backing_off', 'completed', 'failed')),
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
    -- The invocation whose call or send at parent_index started this one. Not a
    -- foreign key: a parent may one day be purged before its callees.
    parent_id            TEXT,
    parent_index         INTEGER,
    -- 1 for a call: this invocation's end is the completion of the parent's entry.
    parent_awaits        INTEGER NOT NULL DEFAULT 0 CHECK (parent_awaits IN (0, 1)),
    cancel_requested     INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    -- While suspended: JSON array of the journal indices whose completion wakes it.
    waiting_on           TEXT,
    CHECK ((parent_id IS NULL) = (parent_index IS NULL))
);

INSERT INTO invocations_new (
    rowid, id, service, handler, key, status, input, headers, deployment_id, idempotency_key, attempt,
    journal_len, output, failure_code, failure_message, last_failure_code, last_failure_message,
    next_run_at_ms, created_at_ms, modified_at_ms, completed_at_ms
)
SELECT
    rowid, id, service, handler, key, status, input, headers, deployment_id, idempotency_key, attempt,
    journal_len, output, failure_code, failure_message, last_failure_code, last_failure_message,
    next_run_at_ms, created_at_ms, modified_at_ms, completed_at_ms
FROM invocations ORDER BY rowid;

-- Also drops invocations_idempotency, invocations_active and invocations_by_created.
DROP TABLE invocations;

ALTER TABLE invocations_new RENAME TO invocations;

CREATE UNIQUE INDEX invocations_idempotency
    ON invocations (service, handler, coalesce(key, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Replaces invocations_active (pending/running/backing_off by next run time):
-- the unfinished invocations by age, for list_runnable, abandon_running and
-- list_invocations of an unfinished status. Queries must repeat this exact
-- WHERE term for SQLite to use the index.
CREATE INDEX invocations_unfinished
    ON invocations (status, created_at_ms)
    WHERE status IN ('scheduled', 'pending', 'running', 'suspended', 'backing_off');

CREATE INDEX invocations_by_created ON invocations (created_at_ms);

-- The callees of an invocation, for the cancel and kill cascades.
CREATE INDEX invocations_by_parent ON invocations (parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE attempts_new (
    invocation_id   TEXT NOT NULL REFERENCES invocations (id) ON DELETE CASCADE,
    attempt         INTEGER NOT NULL,
    endpoint        TEXT,
    started_at_ms   INTEGER NOT NULL,
    ended_at_ms     INTEGER,
    outcome         TEXT CHECK (
        outcome IN ('completed', 'failed', 'retry', 'abandoned', 'suspended', 'resumed', 'killed')
    ),
    failure_code    INTEGER,
    failure_message TEXT,
    PRIMARY KEY (invocation_id, attempt)
) WITHOUT ROWID;

INSERT INTO attempts_new SELECT
    invocation_id, attempt, endpoint, started_at_ms, ended_at_ms, outcome, failure_code, failure_message
FROM attempts;

DROP TABLE attempts;

ALTER TABLE attempts_new RENAME TO attempts;

-- The completion of a completable journal entry (sleep, call, awakeable):
-- written once, never updated. Either result (JSON, NULL for a plain "done")
-- or failure_code/failure_message.
CREATE TABLE completions (
    invocation_id   TEXT NOT NULL,
    idx             INTEGER NOT NULL CHECK (idx >= 0),
    result          BLOB,
    failure_code    INTEGER,
    failure_message TEXT,
    created_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (invocation_id, idx),
    FOREIGN KEY (invocation_id, idx) REFERENCES journal (invocation_id, idx) ON DELETE CASCADE,
    CHECK (failure_code IS NULL OR result IS NULL)
) WITHOUT ROWID;

CREATE TRIGGER completions_are_immutable BEFORE UPDATE ON completions
BEGIN
    SELECT RAISE(ABORT, 'completions are immutable');
END;

-- Durable timers: idx -1 starts the invocation (a delayed start or a retry
-- backoff), idx >= 0 completes the sleep entry at that index.
CREATE TABLE timers (
    invocation_id TEXT NOT NULL REFERENCES invocations (id) ON DELETE CASCADE,
    idx           INTEGER NOT NULL CHECK (idx >= -1),
    due_at_ms     INTEGER NOT NULL,
    PRIMARY KEY (invocation_id, idx)
) WITHOUT ROWID;

CREATE INDEX timers_by_due ON timers (due_at_ms);

-- Invocations backing off under version 1 were found by scanning; now they need a start timer.
INSERT INTO timers (invocation_id, idx, due_at_ms)
SELECT id, -1, coalesce(next_run_at_ms, modified_at_ms) FROM invocations WHERE status = 'backing_off';
