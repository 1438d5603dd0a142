-- 0004 billing (SQLite): tariffs, bills and their lines, the readings and usage each bill used,
-- payments' allocations to bills, late fees, prepaid top-ups, usage alerts, meter replacements,
-- time-of-use register values, and per-community billing settings.
--
-- Rules the schema enforces (the same on PostgreSQL):
-- * A bill is written as a draft, its lines are added, then it is issued. Issuing checks that the
--   bill has at least one line and that its total equals the sum of its lines. Once issued, no
--   line can be added, lines are never updated or deleted, and a bill's amounts, account, period
--   and kind never change (only the dispute fields may). A correction is an adjustment bill.
-- * One regular bill per account and period (bills_account_period_key, a partial unique index).
-- * Allocations and late-fee postings are append-only; a late fee is posted at most once per bill
--   and day (late_fee_postings_day_key).
--
-- Differences from the PostgreSQL tree, and why:
-- * Timestamps are RFC 3339 UTC TEXT and dates 'YYYY-MM-DD' TEXT (PostgreSQL: TIMESTAMPTZ, DATE).
-- * Booleans are INTEGER 0/1 (PostgreSQL: BOOLEAN).
-- * Rules are RAISE(ABORT) triggers (PostgreSQL: PL/pgSQL trigger functions).
-- * Columns added to accounts and readings use ALTER TABLE ADD COLUMN, which SQLite allows with a
--   constant default; the CHECK on customer_class is a column constraint here.
-- * The bulk tables of a bill run (bill_lines, bill_readings, bill_usage) are WITHOUT ROWID, keyed
--   by their primary key alone (one B-tree per row instead of two); their rules are row triggers,
--   cheap in SQLite. PostgreSQL checks the same rules once per statement (see its tree).

-- Lookups by meter number alone (pushes and imports name meters by number; the unique key
-- leads with the utility). And the review queue's index only covers held readings: an index on
-- status alone looked selective to SQLite's planner without statistics and made it scan every
-- valid reading instead of seeking by meter.
CREATE INDEX meters_meter_no_idx ON meters (meter_no);
DROP INDEX readings_status_idx;
CREATE INDEX readings_held_idx ON readings (read_at) WHERE status = 'held';

ALTER TABLE accounts ADD COLUMN customer_class TEXT NOT NULL DEFAULT 'residential'
    CONSTRAINT accounts_customer_class_check CHECK (customer_class IN ('residential', 'non_residential'));
-- The day the account was opened, for pro-rating annual tier thresholds in a part year; NULL
-- means open since before any tier year being billed.
ALTER TABLE accounts ADD COLUMN opened_on TEXT;
-- Prepaid reminders: remind when the credit balance falls below this (fen); NULL = none.
ALTER TABLE accounts ADD COLUMN low_balance_fen INTEGER;

-- The read time of the first reading of the run of equal values this reading ends (NULL when the
-- register moved): "zero use on an occupied premises for several periods" is read from it.
ALTER TABLE readings ADD COLUMN steady_since TEXT;

CREATE TABLE billing_settings (
    community_id              INTEGER PRIMARY KEY CONSTRAINT billing_settings_community_fkey REFERENCES communities (id),
    -- Due on this day of the month after the period, or (when NULL) due_days_after_issue days after issue.
    due_day_of_month          INTEGER CONSTRAINT billing_settings_due_day_check CHECK (due_day_of_month BETWEEN 1 AND 28),
    due_days_after_issue      INTEGER NOT NULL DEFAULT 15 CONSTRAINT billing_settings_due_days_check CHECK (due_days_after_issue BETWEEN 0 AND 366),
    allocation_order          TEXT NOT NULL DEFAULT 'oldest_first' CONSTRAINT billing_settings_allocation_check CHECK (allocation_order IN ('oldest_first', 'newest_first')),
    -- Within a bill, pay the late fee before the principal (default: principal first, §3.5).
    penalty_first             INTEGER NOT NULL DEFAULT 0,
    late_fee_grace_days       INTEGER NOT NULL DEFAULT 0 CONSTRAINT billing_settings_grace_check CHECK (late_fee_grace_days >= 0),
    -- Daily rates in parts per million of the unpaid principal (1‰ = 1000).
    late_fee_residential_ppm  INTEGER NOT NULL DEFAULT 1000 CONSTRAINT billing_settings_rate_res_check CHECK (late_fee_residential_ppm >= 0),
    late_fee_current_year_ppm INTEGER NOT NULL DEFAULT 2000 CONSTRAINT billing_settings_rate_cur_check CHECK (late_fee_current_year_ppm >= 0),
    late_fee_cross_year_ppm   INTEGER NOT NULL DEFAULT 3000 CONSTRAINT billing_settings_rate_cross_check CHECK (late_fee_cross_year_ppm >= 0),
    late_fee_min_fen          INTEGER NOT NULL DEFAULT 100 CONSTRAINT billing_settings_min_check CHECK (late_fee_min_fen >= 0),
    -- Cap on a bill's late fee in basis points of its late-fee-bearing principal; NULL = none.
    late_fee_cap_bp           INTEGER CONSTRAINT billing_settings_cap_check CHECK (late_fee_cap_bp >= 0),
    -- Comma-separated utilities whose charges bear late fees.
    late_fee_utilities        TEXT NOT NULL DEFAULT 'electricity',
    -- A period's usage above this multiple (× 100) of the account's own average raises an alert.
    usage_alert_multiple_e2   INTEGER NOT NULL DEFAULT 300 CONSTRAINT billing_settings_alert_check CHECK (usage_alert_multiple_e2 > 100),
    updated_at                TEXT NOT NULL,
    updated_by                TEXT NOT NULL
);

CREATE TABLE tariff_versions (
    id                    INTEGER PRIMARY KEY,
    community_id          INTEGER NOT NULL CONSTRAINT tariff_versions_community_fkey REFERENCES communities (id),
    utility               TEXT NOT NULL CONSTRAINT tariff_versions_utility_check CHECK (utility IN ('electricity', 'water')),
    customer_class        TEXT NOT NULL DEFAULT 'all' CONSTRAINT tariff_versions_class_check CHECK (customer_class IN ('all', 'residential', 'non_residential')),
    name                  TEXT NOT NULL,
    effective_from        TEXT NOT NULL,
    -- first day no longer in effect (exclusive); NULL = until the next version
    effective_to          TEXT,
    tier_basis            TEXT NOT NULL CONSTRAINT tariff_versions_basis_check CHECK (tier_basis IN ('period', 'annual')),
    tier_year_start_month INTEGER NOT NULL DEFAULT 1 CONSTRAINT tariff_versions_year_start_check CHECK (tier_year_start_month BETWEEN 1 AND 12),
    part_year             TEXT NOT NULL DEFAULT 'started_month' CONSTRAINT tariff_versions_part_year_check CHECK (part_year IN ('started_month', 'whole_months', 'none')),
    -- The version's thresholds, components and charges as JSON with prices as exact decimal
    -- strings. A version is an immutable document read whole; SQL never sums its prices.
    definition            TEXT NOT NULL,
    source_document       TEXT,
    created_at            TEXT NOT NULL,
    created_by            TEXT NOT NULL,
    CONSTRAINT tariff_versions_dates_check CHECK (effective_to IS NULL OR effective_to > effective_from),
    CONSTRAINT tariff_versions_effective_key UNIQUE (community_id, utility, customer_class, effective_from)
);

CREATE TRIGGER tariff_versions_no_update BEFORE UPDATE ON tariff_versions
BEGIN
    SELECT RAISE(ABORT, 'tariff_version_immutable: a tariff version is never changed; add a new version');
END;

CREATE TABLE bill_runs (
    id            INTEGER PRIMARY KEY,
    community_id  INTEGER NOT NULL CONSTRAINT bill_runs_community_fkey REFERENCES communities (id),
    period        TEXT NOT NULL,
    actor         TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    bills_issued  INTEGER NOT NULL DEFAULT 0,
    adjustments   INTEGER NOT NULL DEFAULT 0,
    skipped       INTEGER NOT NULL DEFAULT 0,
    total_fen     INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE bills (
    id              INTEGER PRIMARY KEY,
    community_id    INTEGER NOT NULL CONSTRAINT bills_community_fkey REFERENCES communities (id),
    account_id      INTEGER NOT NULL CONSTRAINT bills_account_fkey REFERENCES accounts (id),
    period          TEXT NOT NULL CONSTRAINT bills_period_check CHECK (period GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]'),
    kind            TEXT NOT NULL CONSTRAINT bills_kind_check CHECK (kind IN ('regular', 'adjustment')),
    adjusts_bill_id INTEGER CONSTRAINT bills_adjusts_fkey REFERENCES bills (id),
    reason          TEXT,
    status          TEXT NOT NULL DEFAULT 'draft' CONSTRAINT bills_status_check CHECK (status IN ('draft', 'issued')),
    total_fen       INTEGER NOT NULL,
    due_date        TEXT NOT NULL,
    issued_at       TEXT,
    run_id          INTEGER CONSTRAINT bills_run_fkey REFERENCES bill_runs (id),
    disputed        INTEGER NOT NULL DEFAULT 0,
    dispute_reason  TEXT,
    disputed_at     TEXT,
    disputed_by     TEXT,
    -- an operator waived this bill's late fee; no more accrues
    late_fee_waived INTEGER NOT NULL DEFAULT 0,
    -- the last day the nightly accrual computed this bill's fee through
    late_fee_through TEXT,
    created_at      TEXT NOT NULL,
    created_by      TEXT NOT NULL,
    CONSTRAINT bills_adjusts_check CHECK ((kind = 'adjustment') = (adjusts_bill_id IS NOT NULL))
);
CREATE UNIQUE INDEX bills_account_period_key ON bills (account_id, period) WHERE kind = 'regular';
CREATE INDEX bills_account_idx ON bills (account_id, due_date);
CREATE INDEX bills_community_period_idx ON bills (community_id, period);

CREATE TABLE bill_lines (
    bill_id           INTEGER NOT NULL CONSTRAINT bill_lines_bill_fkey REFERENCES bills (id),
    line_no           INTEGER NOT NULL,
    utility           TEXT CONSTRAINT bill_lines_utility_check CHECK (utility IN ('electricity', 'water')),
    kind              TEXT NOT NULL CONSTRAINT bill_lines_kind_check CHECK (kind IN ('usage', 'fixed', 'per_area', 'adjustment')),
    component         TEXT NOT NULL,
    description       TEXT NOT NULL,
    tier              INTEGER,
    tou_period        TEXT,
    quantity_e4       INTEGER NOT NULL,
    unit_price_e6     INTEGER NOT NULL,
    amount_fen        INTEGER NOT NULL,
    tariff_version_id INTEGER CONSTRAINT bill_lines_tariff_fkey REFERENCES tariff_versions (id),
    -- the period whose usage this line rates (differs from the bill's for re-rated lines)
    usage_period      TEXT,
    date_from         TEXT,
    date_to           TEXT,
    -- how the line was computed (cumulative before, thresholds, days), as JSON
    trace             TEXT,
    -- the ledger account credited for this line when not revenue:{utility} (e.g. payable:sewage)
    ledger_code       TEXT,
    CONSTRAINT bill_lines_pkey PRIMARY KEY (bill_id, line_no)
) WITHOUT ROWID;

CREATE TRIGGER bill_lines_sealed BEFORE INSERT ON bill_lines
WHEN (SELECT status FROM bills WHERE id = NEW.bill_id) <> 'draft'
BEGIN
    SELECT RAISE(ABORT, 'bill_sealed: lines cannot be added to an issued bill; issue an adjustment bill');
END;
CREATE TRIGGER bill_lines_no_update BEFORE UPDATE ON bill_lines
BEGIN
    SELECT RAISE(ABORT, 'bill_immutable: bill lines are never updated; issue an adjustment bill');
END;
CREATE TRIGGER bill_lines_no_delete BEFORE DELETE ON bill_lines
BEGIN
    SELECT RAISE(ABORT, 'bill_immutable: bill lines are never deleted; issue an adjustment bill');
END;
CREATE TRIGGER bills_issue_balanced BEFORE UPDATE OF status ON bills
WHEN OLD.status = 'draft' AND NEW.status = 'issued' AND (
    (SELECT COUNT(*) FROM bill_lines WHERE bill_id = NEW.id) < 1
    OR (SELECT COALESCE(SUM(amount_fen), 0) FROM bill_lines WHERE bill_id = NEW.id) <> NEW.total_fen)
BEGIN
    SELECT RAISE(ABORT, 'bill_unbalanced: a bill needs at least one line and a total equal to the sum of its lines');
END;
CREATE TRIGGER bills_issued_frozen BEFORE UPDATE ON bills
WHEN OLD.status = 'issued' AND (
    NEW.status <> OLD.status OR NEW.total_fen <> OLD.total_fen OR NEW.account_id <> OLD.account_id
    OR NEW.period <> OLD.period OR NEW.kind <> OLD.kind OR NEW.due_date <> OLD.due_date
    OR COALESCE(NEW.adjusts_bill_id, 0) <> COALESCE(OLD.adjusts_bill_id, 0))
BEGIN
    SELECT RAISE(ABORT, 'bill_immutable: an issued bill never changes; issue an adjustment bill');
END;
CREATE TRIGGER bills_no_delete BEFORE DELETE ON bills
BEGIN
    SELECT RAISE(ABORT, 'bill_immutable: bills are never deleted; issue an adjustment bill');
END;

-- The readings a bill used, per meter.
CREATE TABLE bill_readings (
    bill_id         INTEGER NOT NULL CONSTRAINT bill_readings_bill_fkey REFERENCES bills (id),
    meter_id        INTEGER NOT NULL CONSTRAINT bill_readings_meter_fkey REFERENCES meters (id),
    utility         TEXT NOT NULL,
    from_reading_id INTEGER NOT NULL CONSTRAINT bill_readings_from_fkey REFERENCES readings (id),
    to_reading_id   INTEGER NOT NULL CONSTRAINT bill_readings_to_fkey REFERENCES readings (id),
    from_value_e4   INTEGER NOT NULL,
    to_value_e4     INTEGER NOT NULL,
    from_at         TEXT NOT NULL,
    to_at           TEXT NOT NULL,
    from_kind       TEXT NOT NULL,
    to_kind         TEXT NOT NULL,
    multiplier_e4   INTEGER NOT NULL,
    usage_e4        INTEGER NOT NULL,
    rollovers       INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT bill_readings_pkey PRIMARY KEY (bill_id, meter_id)
) WITHOUT ROWID;

-- Usage counted per account, utility and period (negative rows correct earlier ones): the
-- annual ladder's cumulative counter and the history usage alerts compare against.
CREATE TABLE bill_usage (
    bill_id         INTEGER NOT NULL CONSTRAINT bill_usage_bill_fkey REFERENCES bills (id),
    community_id    INTEGER NOT NULL,
    account_id      INTEGER NOT NULL,
    utility         TEXT NOT NULL,
    usage_period    TEXT NOT NULL,
    tier_year_start TEXT,
    quantity_e4     INTEGER NOT NULL,
    -- the period's closing reading was an estimate
    estimated       INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT bill_usage_pkey PRIMARY KEY (bill_id, utility, usage_period)
) WITHOUT ROWID;
CREATE INDEX bill_usage_account_idx ON bill_usage (account_id, utility, usage_period);

-- Where billing stopped on each meter: the last billed closing reading, and the last billed
-- reading that was not an estimate (a re-rating span starts there).
CREATE TABLE meter_bill_state (
    meter_id          INTEGER PRIMARY KEY CONSTRAINT meter_bill_state_meter_fkey REFERENCES meters (id),
    account_id        INTEGER NOT NULL,
    reading_id        INTEGER NOT NULL,
    read_at           TEXT NOT NULL,
    value_e4          INTEGER NOT NULL,
    kind              TEXT NOT NULL,
    anchor_reading_id INTEGER NOT NULL,
    anchor_at         TEXT NOT NULL,
    anchor_value_e4   INTEGER NOT NULL,
    -- the period of the bill that closed on the anchor; NULL when the anchor opened the meter
    anchor_period     TEXT,
    bill_id           INTEGER NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX meter_bill_state_account_idx ON meter_bill_state (account_id);

-- Money applied to a bill: positive amounts reduce its outstanding. Sources: a payment (the
-- payment's reference), the account's credit, or an adjustment bill (credit note) applied to it
-- (the credit note carries the matching negative allocation).
CREATE TABLE bill_allocations (
    id              INTEGER PRIMARY KEY,
    bill_id         INTEGER NOT NULL CONSTRAINT bill_allocations_bill_fkey REFERENCES bills (id),
    account_id      INTEGER NOT NULL,
    amount_fen      INTEGER NOT NULL CONSTRAINT bill_allocations_amount_check CHECK (amount_fen <> 0),
    principal_fen   INTEGER NOT NULL,
    late_fee_fen    INTEGER NOT NULL,
    source          TEXT NOT NULL CONSTRAINT bill_allocations_source_check CHECK (source IN ('payment', 'credit', 'adjustment')),
    source_ref      TEXT NOT NULL,
    allocated_at    TEXT NOT NULL,
    accounting_date TEXT NOT NULL,
    CONSTRAINT bill_allocations_parts_check CHECK (principal_fen + late_fee_fen = amount_fen)
);
CREATE INDEX bill_allocations_bill_idx ON bill_allocations (bill_id);
CREATE INDEX bill_allocations_account_idx ON bill_allocations (account_id);
CREATE TRIGGER bill_allocations_no_update BEFORE UPDATE ON bill_allocations
BEGIN
    SELECT RAISE(ABORT, 'allocation_append_only: allocations are never changed; post a reversal');
END;
CREATE TRIGGER bill_allocations_no_delete BEFORE DELETE ON bill_allocations
BEGIN
    SELECT RAISE(ABORT, 'allocation_append_only: allocations are never deleted; post a reversal');
END;

-- Late fees: each accrual posts the change of the bill's fee to date (the §3.6 computation
-- redone from the due date with what is known that night), with its trace; a waiver reverses
-- the fee and stops accrual.
CREATE TABLE late_fee_postings (
    id              INTEGER PRIMARY KEY,
    bill_id         INTEGER NOT NULL CONSTRAINT late_fee_postings_bill_fkey REFERENCES bills (id),
    as_of           TEXT NOT NULL,
    kind            TEXT NOT NULL CONSTRAINT late_fee_postings_kind_check CHECK (kind IN ('accrual', 'waiver')),
    fee_to_date_fen INTEGER NOT NULL,
    delta_fen       INTEGER NOT NULL,
    -- the exact accrued amount in yuan, before rounding and the minimum
    accrued_exact   TEXT NOT NULL,
    trace           TEXT NOT NULL,
    actor           TEXT NOT NULL,
    reason          TEXT,
    created_at      TEXT NOT NULL,
    CONSTRAINT late_fee_postings_day_key UNIQUE (bill_id, as_of, kind)
);
CREATE INDEX late_fee_postings_bill_idx ON late_fee_postings (bill_id);
CREATE TRIGGER late_fee_postings_no_update BEFORE UPDATE ON late_fee_postings
BEGIN
    SELECT RAISE(ABORT, 'late_fee_append_only: late-fee postings are never changed');
END;
CREATE TRIGGER late_fee_postings_no_delete BEFORE DELETE ON late_fee_postings
BEGIN
    SELECT RAISE(ABORT, 'late_fee_append_only: late-fee postings are never deleted');
END;

CREATE TABLE topups (
    id          INTEGER PRIMARY KEY,
    account_id  INTEGER NOT NULL CONSTRAINT topups_account_fkey REFERENCES accounts (id),
    amount_fen  INTEGER NOT NULL CONSTRAINT topups_amount_check CHECK (amount_fen > 0),
    reference   TEXT NOT NULL,
    note        TEXT,
    actor       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    CONSTRAINT topups_reference_key UNIQUE (reference)
);

CREATE TABLE usage_alerts (
    id           INTEGER PRIMARY KEY,
    community_id INTEGER NOT NULL,
    account_id   INTEGER NOT NULL CONSTRAINT usage_alerts_account_fkey REFERENCES accounts (id),
    utility      TEXT NOT NULL,
    period       TEXT NOT NULL,
    kind         TEXT NOT NULL CONSTRAINT usage_alerts_kind_check CHECK (kind IN ('high_usage', 'stopped_meter')),
    usage_e4     INTEGER NOT NULL,
    baseline_e4  INTEGER NOT NULL,
    detail       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    CONSTRAINT usage_alerts_key UNIQUE (account_id, utility, period, kind)
);
CREATE INDEX usage_alerts_community_idx ON usage_alerts (community_id, period);

CREATE TABLE meter_replacements (
    id                 INTEGER PRIMARY KEY,
    old_meter_id       INTEGER NOT NULL CONSTRAINT meter_replacements_old_fkey REFERENCES meters (id),
    new_meter_id       INTEGER NOT NULL CONSTRAINT meter_replacements_new_fkey REFERENCES meters (id),
    replaced_on        TEXT NOT NULL,
    final_reading_id   INTEGER CONSTRAINT meter_replacements_final_fkey REFERENCES readings (id),
    initial_reading_id INTEGER CONSTRAINT meter_replacements_initial_fkey REFERENCES readings (id),
    reason             TEXT NOT NULL,
    work_order_ref     TEXT,
    read_by            TEXT,
    photo_ref          TEXT,
    actor              TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    CONSTRAINT meter_replacements_old_key UNIQUE (old_meter_id)
);

-- Time-of-use register values read with a reading (the reading's own value is the total).
CREATE TABLE reading_registers (
    reading_id INTEGER NOT NULL CONSTRAINT reading_registers_reading_fkey REFERENCES readings (id),
    register   TEXT NOT NULL CONSTRAINT reading_registers_register_check CHECK (register IN ('sharp', 'peak', 'flat', 'valley')),
    value_e4   INTEGER NOT NULL CONSTRAINT reading_registers_value_check CHECK (value_e4 >= 0),
    CONSTRAINT reading_registers_pkey PRIMARY KEY (reading_id, register)
);
