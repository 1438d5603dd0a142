-- 0001 foundation (SQLite).
-- Tenants, customer accounts, premises and meters (the seed records), the double-entry ledger,
-- the audit log, idempotency keys, cron slots (job_runs) and the task queue.
--
-- Differences from the PostgreSQL tree, and why:
-- * Timestamps are TEXT in RFC 3339 UTC as sqlx writes them; they compare correctly as text.
--   Dates are TEXT 'YYYY-MM-DD'. PostgreSQL uses TIMESTAMPTZ and DATE.
-- * UUIDs (journal entry ids) are 16-byte BLOBs; PostgreSQL uses UUID.
-- * Append-only and balance rules are enforced with RAISE(ABORT) triggers; PostgreSQL uses
--   PL/pgSQL trigger functions. The rules are the same:
--     - journal lines are inserted first, then their entry; inserting the entry checks that its
--       lines number at least two and sum to zero; once the entry exists no line can be added;
--       the deferred foreign key refuses, at commit, lines whose entry was never inserted;
--     - nothing in the journal is ever updated or deleted.

CREATE TABLE communities (
    id            INTEGER PRIMARY KEY,
    code          TEXT NOT NULL,
    name          TEXT NOT NULL,
    timezone      TEXT NOT NULL DEFAULT 'Asia/Shanghai',
    created_at    TEXT NOT NULL,
    CONSTRAINT communities_code_key UNIQUE (code)
);

CREATE TABLE premises (
    id            INTEGER PRIMARY KEY,
    community_id  INTEGER NOT NULL CONSTRAINT premises_community_fkey REFERENCES communities (id),
    building      TEXT NOT NULL,
    unit          TEXT NOT NULL,
    door_no       TEXT NOT NULL,
    kind          TEXT NOT NULL DEFAULT 'residential',
    -- floor area in 1/100 m² (per-area charges)
    area_m2_e2    INTEGER,
    occupied      INTEGER NOT NULL DEFAULT 1,
    created_at    TEXT NOT NULL,
    CONSTRAINT premises_address_key UNIQUE (community_id, building, unit, door_no)
);

CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY,
    community_id  INTEGER NOT NULL CONSTRAINT accounts_community_fkey REFERENCES communities (id),
    premises_id   INTEGER CONSTRAINT accounts_premises_fkey REFERENCES premises (id),
    code          TEXT NOT NULL,
    name          TEXT NOT NULL,
    phone         TEXT,
    mobile        TEXT,
    email         TEXT,
    credit_rating TEXT NOT NULL DEFAULT 'normal',
    payment_mode  TEXT NOT NULL DEFAULT 'postpaid' CONSTRAINT accounts_payment_mode_check CHECK (payment_mode IN ('postpaid', 'prepaid')),
    status        TEXT NOT NULL DEFAULT 'active' CONSTRAINT accounts_status_check CHECK (status IN ('active', 'closed')),
    created_at    TEXT NOT NULL,
    CONSTRAINT accounts_code_key UNIQUE (community_id, code)
);

CREATE TABLE meters (
    id            INTEGER PRIMARY KEY,
    community_id  INTEGER NOT NULL CONSTRAINT meters_community_fkey REFERENCES communities (id),
    account_id    INTEGER CONSTRAINT meters_account_fkey REFERENCES accounts (id),
    premises_id   INTEGER CONSTRAINT meters_premises_fkey REFERENCES premises (id),
    meter_no      TEXT NOT NULL,
    utility       TEXT NOT NULL CONSTRAINT meters_utility_check CHECK (utility IN ('electricity', 'water')),
    model         TEXT,
    digit_count   INTEGER NOT NULL CONSTRAINT meters_digit_count_check CHECK (digit_count BETWEEN 1 AND 12),
    -- multiplier (CT ratio) in 1/10000
    multiplier_e4 INTEGER NOT NULL DEFAULT 10000 CONSTRAINT meters_multiplier_check CHECK (multiplier_e4 > 0),
    installed_on  TEXT NOT NULL,
    removed_on    TEXT,
    created_at    TEXT NOT NULL,
    CONSTRAINT meters_number_key UNIQUE (utility, meter_no)
);
CREATE INDEX meters_account_idx ON meters (account_id);

CREATE TABLE ledger_accounts (
    id            INTEGER PRIMARY KEY,
    code          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    name          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    CONSTRAINT ledger_accounts_code_key UNIQUE (code)
);

CREATE TABLE journal_entries (
    id              BLOB PRIMARY KEY,
    kind            TEXT NOT NULL,
    reference       TEXT NOT NULL,
    memo            TEXT NOT NULL DEFAULT '',
    accounting_date TEXT NOT NULL,
    posted_at       TEXT NOT NULL,
    created_by      TEXT NOT NULL,
    CONSTRAINT journal_entries_kind_reference_key UNIQUE (kind, reference)
);

CREATE TABLE journal_lines (
    id                INTEGER PRIMARY KEY,
    entry_id          BLOB NOT NULL CONSTRAINT journal_lines_entry_fkey REFERENCES journal_entries (id) DEFERRABLE INITIALLY DEFERRED,
    line_no           INTEGER NOT NULL,
    ledger_account_id INTEGER NOT NULL CONSTRAINT journal_lines_account_fkey REFERENCES ledger_accounts (id),
    -- debit positive, credit negative
    amount_fen        INTEGER NOT NULL CONSTRAINT journal_lines_amount_nonzero CHECK (amount_fen <> 0),
    CONSTRAINT journal_lines_entry_line_key UNIQUE (entry_id, line_no)
);
CREATE INDEX journal_lines_account_idx ON journal_lines (ledger_account_id);

CREATE TRIGGER journal_lines_entry_sealed BEFORE INSERT ON journal_lines
WHEN EXISTS (SELECT 1 FROM journal_entries WHERE id = NEW.entry_id)
BEGIN
    SELECT RAISE(ABORT, 'journal_entry_sealed: lines cannot be added to a posted journal entry');
END;

CREATE TRIGGER journal_entries_balanced BEFORE INSERT ON journal_entries
WHEN (SELECT COUNT(*) FROM journal_lines WHERE entry_id = NEW.id) < 2
  OR (SELECT COALESCE(SUM(amount_fen), 0) FROM journal_lines WHERE entry_id = NEW.id) <> 0
BEGIN
    SELECT RAISE(ABORT, 'journal_entry_unbalanced: a journal entry needs at least two lines summing to zero');
END;

CREATE TRIGGER journal_lines_no_update BEFORE UPDATE ON journal_lines
BEGIN
    SELECT RAISE(ABORT, 'journal_append_only: journal lines are never updated; post a correcting entry');
END;
CREATE TRIGGER journal_lines_no_delete BEFORE DELETE ON journal_lines
BEGIN
    SELECT RAISE(ABORT, 'journal_append_only: journal lines are never deleted; post a correcting entry');
END;
CREATE TRIGGER journal_entries_no_update BEFORE UPDATE ON journal_entries
BEGIN
    SELECT RAISE(ABORT, 'journal_append_only: journal entries are never updated; post a correcting entry');
END;
CREATE TRIGGER journal_entries_no_delete BEFORE DELETE ON journal_entries
BEGIN
    SELECT RAISE(ABORT, 'journal_append_only: journal entries are never deleted; post a correcting entry');
END;

CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY,
    at            TEXT NOT NULL,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    subject_type  TEXT NOT NULL,
    subject_id    TEXT NOT NULL,
    before_json   TEXT,
    after_json    TEXT,
    reason        TEXT,
    request_id    TEXT
);
CREATE INDEX audit_log_subject_idx ON audit_log (subject_type, subject_id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_append_only: the audit log is never updated');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_append_only: the audit log is never deleted');
END;

CREATE TABLE idempotency_keys (
    scope           TEXT NOT NULL,
    idem_key        TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    response_status INTEGER,
    response_body   BLOB,
    created_at      TEXT NOT NULL,
    completed_at    TEXT,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (scope, idem_key)
);

CREATE TABLE job_runs (
    id            INTEGER PRIMARY KEY,
    job_name      TEXT NOT NULL,
    scheduled_for TEXT NOT NULL,
    instance_id   TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    outcome       TEXT,
    error         TEXT,
    CONSTRAINT job_runs_slot_key UNIQUE (job_name, scheduled_for)
);

CREATE TABLE tasks (
    id               INTEGER PRIMARY KEY,
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL,
    dedupe_key       TEXT,
    status           TEXT NOT NULL DEFAULT 'queued' CONSTRAINT tasks_status_check CHECK (status IN ('queued', 'running', 'done', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 10,
    run_at           TEXT NOT NULL,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    CONSTRAINT tasks_dedupe_key UNIQUE (dedupe_key)
);
CREATE INDEX tasks_ready_idx ON tasks (status, run_at);
