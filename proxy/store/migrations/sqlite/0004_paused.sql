-- 0004_paused: invocations whose retry policy ran out can be paused instead of failed.
--
-- `invocations` is rebuilt once more (the status CHECK gains 'paused'; see 0002
-- for why and how): same columns, rowids kept, plus `attempts_at_resume`.
-- `attempts` is rebuilt too: its outcome CHECK gains 'paused'.

CREATE TABLE invocations_new (
    id                   TEXT PRIMARY KEY NOT NULL,
    service              TEXT NOT NULL,
    handler              TEXT NOT NULL,
    key                  TEXT,
    status               TEXT NOT NULL
        CHECK (status IN (
            'scheduled', 'queued', 'pending', 'running', 'suspended', 'backing_off', 'paused', 'completed', 'failed'
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
    exclusive            INTEGER NOT NULL DEFAULT 0 CHECK (exclusive IN (0, 1)),
    -- The attempt counter when the invocation was last resumed (or cancelled) out of 'paused':
    -- the retry policy counts the attempts since then, so a resume gives a full budget again.
    attempts_at_resume   INTEGER NOT NULL DEFAULT 0,
    CHECK ((parent_id IS NULL) = (parent_index IS NULL)),
    CHECK (attempts_at_resume BETWEEN 0 AND attempt)
);

INSERT INTO invocations_new (
    rowid, id, service, handler, key, status, input, headers, deployment_id, idempotency_key, attempt,
    journal_len, output, failure_code, failure_message, last_failure_code, last_failure_message,
    next_run_at_ms, created_at_ms, modified_at_ms, completed_at_ms, parent_id, parent_index, parent_awaits,
    cancel_requested, waiting_on, exclusive
)
SELECT
    rowid, id, service, handler, key, status, input, headers, deployment_id, idempotency_key, attempt,
    journal_len, output, failure_code, failure_message, last_failure_code, last_failure_message,
    next_run_at_ms, created_at_ms, modified_at_ms, completed_at_ms, parent_id, parent_index, parent_awaits,
    cancel_requested, waiting_on, exclusive
FROM invocations ORDER BY rowid;

-- Also drops every index of the old table; they are made again below.
DROP TABLE invocations;

ALTER TABLE invocations_new RENAME TO invocations;

CREATE UNIQUE INDEX invocations_idempotency
    ON invocations (service, handler, coalesce(key, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- As in 0003, with 'paused' (unfinished: it holds its key's lock and its callers wait).
-- Queries must repeat this exact WHERE term for SQLite to use the index.
CREATE INDEX invocations_unfinished
    ON invocations (status, created_at_ms)
    WHERE status IN ('scheduled', 'queued', 'pending', 'running', 'suspended', 'backing_off', 'paused');

CREATE INDEX invocations_by_created ON invocations (created_at_ms);

CREATE INDEX invocations_by_parent ON invocations (parent_id) WHERE parent_id IS NOT NULL;

CREATE INDEX invocations_by_key ON invocations (service, key) WHERE key IS NOT NULL;

-- Queries must repeat this exact WHERE term for SQLite to use the index.
CREATE INDEX invocations_workflow_runs
    ON invocations (service, completed_at_ms)
    WHERE handler = 'run' AND idempotency_key = 'run';

CREATE TABLE attempts_new (
    invocation_id   TEXT NOT NULL REFERENCES invocations (id) ON DELETE CASCADE,
    attempt         INTEGER NOT NULL,
    endpoint        TEXT,
    started_at_ms   INTEGER NOT NULL,
    ended_at_ms     INTEGER,
    outcome         TEXT CHECK (
        outcome IN ('completed', 'failed', 'retry', 'abandoned', 'suspended', 'resumed', 'killed', 'paused')
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
