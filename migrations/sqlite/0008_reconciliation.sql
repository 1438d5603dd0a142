-- 0008 reconciliation (SQLite): the daily reconciliation of gateway settlement files against the
-- ledger (README "Reconciliation").
--
-- * recon_files: every settlement file taken, byte for byte, with its SHA-256 (kept for audit;
--   the same bytes for the same day are stored once).
-- * recon_runs: one row per run of (channel, merchant, bill date). A re-run inserts a new run and
--   makes it the current one; earlier runs and their items stay as history. At most one run per
--   day is current (partial unique index).
-- * recon_items: what a run found that is not a plain match (long, short, amount, status,
--   duplicate, fee, expected cross-day, cross-day matches). Items are never updated.
-- * recon_resolutions: the decision that closed an item (automatic or by finance), keyed by the
--   item's stable key within its day so that a re-run finds it again. Append-only.
-- * an index on journal_entries (accounting_date, kind): reconciliation reads one day's
--   gateway-clearing entries.
--
-- Differences from the PostgreSQL tree: dates are TEXT 'YYYY-MM-DD', timestamps RFC 3339 TEXT,
-- booleans 0/1, the file BLOB (BYTEA there), append-only enforced by RAISE(ABORT) triggers.

CREATE TABLE recon_files (
    id            INTEGER PRIMARY KEY,
    channel       TEXT NOT NULL CONSTRAINT recon_files_channel_check CHECK (channel IN ('alipay', 'wechatpay', 'unionpay')),
    merchant_id   TEXT NOT NULL,
    bill_date     TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    size_bytes    INTEGER NOT NULL,
    content       BLOB NOT NULL,
    -- download | file:<name> | upload | demo
    source        TEXT NOT NULL,
    received_at   TEXT NOT NULL,
    CONSTRAINT recon_files_content_key UNIQUE (channel, merchant_id, bill_date, sha256)
);

CREATE TABLE recon_runs (
    id            INTEGER PRIMARY KEY,
    channel       TEXT NOT NULL CONSTRAINT recon_runs_channel_check CHECK (channel IN ('alipay', 'wechatpay', 'unionpay')),
    merchant_id   TEXT NOT NULL,
    bill_date     TEXT NOT NULL,
    file_id       INTEGER NOT NULL CONSTRAINT recon_runs_file_fkey REFERENCES recon_files (id),
    -- schedule | cli | api | demo
    started_via   TEXT NOT NULL,
    started_by    TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    finished_at   TEXT NOT NULL,
    outcome       TEXT NOT NULL CONSTRAINT recon_runs_outcome_check CHECK (outcome IN ('balanced', 'balanced_with_pending', 'exceptions')),
    is_current    INTEGER NOT NULL DEFAULT 1,
    -- the run's summary (counts and amounts per class, file and ledger totals) as JSON
    summary_json  TEXT NOT NULL,
    -- SHA-256 over the run's classified results: equal for equal inputs
    results_sha256 TEXT NOT NULL
);
CREATE UNIQUE INDEX recon_runs_current_key ON recon_runs (channel, merchant_id, bill_date) WHERE is_current;
CREATE INDEX recon_runs_day_idx ON recon_runs (bill_date, channel, merchant_id);

CREATE TABLE recon_items (
    id                INTEGER PRIMARY KEY,
    run_id            INTEGER NOT NULL CONSTRAINT recon_items_run_fkey REFERENCES recon_runs (id),
    item_key          TEXT NOT NULL,
    class             TEXT NOT NULL CONSTRAINT recon_items_class_check CHECK (class IN ('long', 'short', 'amount', 'status', 'duplicate', 'fee', 'expected', 'cross_day')),
    kind              TEXT NOT NULL CONSTRAINT recon_items_kind_check CHECK (kind IN ('payment', 'refund')),
    order_no          TEXT NOT NULL,
    refund_no         TEXT,
    gateway_txn_id    TEXT,
    file_amount_fen   INTEGER,
    ledger_amount_fen INTEGER,
    -- what the gateway holds beyond our ledger, in clearing terms (fee items: file fee - contracted fee)
    difference_fen    INTEGER NOT NULL,
    file_fee          TEXT,
    expected_fee_fen  INTEGER,
    -- the row's time as the file writes it (China Standard Time)
    file_time         TEXT,
    ledger_date       TEXT,
    -- expected items: the end of the grace period, after which they count as short
    expected_until    TEXT,
    detail            TEXT NOT NULL,
    original_line     TEXT,
    CONSTRAINT recon_items_run_key UNIQUE (run_id, item_key)
);
CREATE INDEX recon_items_order_idx ON recon_items (order_no);

CREATE TABLE recon_resolutions (
    id                INTEGER PRIMARY KEY,
    channel           TEXT NOT NULL,
    merchant_id       TEXT NOT NULL,
    bill_date         TEXT NOT NULL,
    item_key          TEXT NOT NULL,
    decision          TEXT NOT NULL CONSTRAINT recon_resolutions_decision_check CHECK (decision IN ('auto_backfill', 'auto_cross_day', 'post_payment', 'refund', 'write_off', 'carry_over')),
    reason            TEXT NOT NULL CONSTRAINT recon_resolutions_reason_check CHECK (length(trim(reason)) > 0),
    decided_by        TEXT NOT NULL,
    decided_at        TEXT NOT NULL,
    -- the journal entry the decision posted, if any (kind, reference)
    journal_kind      TEXT,
    journal_reference TEXT,
    -- rule id and inputs (automatic) or the evidence given (finance), as JSON
    evidence_json     TEXT NOT NULL DEFAULT '{}',
    CONSTRAINT recon_resolutions_item_key UNIQUE (channel, merchant_id, bill_date, item_key)
);

CREATE TRIGGER recon_resolutions_no_update BEFORE UPDATE ON recon_resolutions
BEGIN
    SELECT RAISE(ABORT, 'recon_append_only: a reconciliation decision is never edited; record a new one');
END;
CREATE TRIGGER recon_resolutions_no_delete BEFORE DELETE ON recon_resolutions
BEGIN
    SELECT RAISE(ABORT, 'recon_append_only: a reconciliation decision is never deleted');
END;
CREATE TRIGGER recon_items_no_update BEFORE UPDATE ON recon_items
BEGIN
    SELECT RAISE(ABORT, 'recon_append_only: reconciliation items are never edited; run the day again');
END;

CREATE INDEX journal_entries_date_kind_idx ON journal_entries (accounting_date, kind);
