-- 0004 billing (PostgreSQL): tariffs, bills and their lines, the readings and usage each bill used,
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
-- Differences from the SQLite tree, and why:
-- * TIMESTAMPTZ and DATE where SQLite stores RFC 3339 text and 'YYYY-MM-DD' text.
-- * BOOLEAN where SQLite stores INTEGER 0/1; BIGINT identities where SQLite uses INTEGER PRIMARY KEY.
-- * Rules are PL/pgSQL trigger functions (SQLite: RAISE(ABORT) triggers); the period format is
--   checked with a regular expression (SQLite: GLOB). The bill rules are statement-level
--   triggers over transition tables (one check per INSERT or UPDATE statement, set-wise), where
--   SQLite checks each row; the rules are the same.

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
ALTER TABLE accounts ADD COLUMN opened_on DATE;
-- Prepaid reminders: remind when the credit balance falls below this (fen); NULL = none.
ALTER TABLE accounts ADD COLUMN low_balance_fen BIGINT;

-- The read time of the first reading of the run of equal values this reading ends (NULL when the
-- register moved): "zero use on an occupied premises for several periods" is read from it.
ALTER TABLE readings ADD COLUMN steady_since TIMESTAMPTZ;

CREATE TABLE billing_settings (
    community_id              BIGINT PRIMARY KEY CONSTRAINT billing_settings_community_fkey REFERENCES communities (id),
    -- Due on this day of the month after the period, or (when NULL) due_days_after_issue days after issue.
    due_day_of_month          INTEGER CONSTRAINT billing_settings_due_day_check CHECK (due_day_of_month BETWEEN 1 AND 28),
    due_days_after_issue      INTEGER NOT NULL DEFAULT 15 CONSTRAINT billing_settings_due_days_check CHECK (due_days_after_issue BETWEEN 0 AND 366),
    allocation_order          TEXT NOT NULL DEFAULT 'oldest_first' CONSTRAINT billing_settings_allocation_check CHECK (allocation_order IN ('oldest_first', 'newest_first')),
    -- Within a bill, pay the late fee before the principal (default: principal first, §3.5).
    penalty_first             BOOLEAN NOT NULL DEFAULT FALSE,
    late_fee_grace_days       INTEGER NOT NULL DEFAULT 0 CONSTRAINT billing_settings_grace_check CHECK (late_fee_grace_days >= 0),
    -- Daily rates in parts per million of the unpaid principal (1‰ = 1000).
    late_fee_residential_ppm  BIGINT NOT NULL DEFAULT 1000 CONSTRAINT billing_settings_rate_res_check CHECK (late_fee_residential_ppm >= 0),
    late_fee_current_year_ppm BIGINT NOT NULL DEFAULT 2000 CONSTRAINT billing_settings_rate_cur_check CHECK (late_fee_current_year_ppm >= 0),
    late_fee_cross_year_ppm   BIGINT NOT NULL DEFAULT 3000 CONSTRAINT billing_settings_rate_cross_check CHECK (late_fee_cross_year_ppm >= 0),
    late_fee_min_fen          BIGINT NOT NULL DEFAULT 100 CONSTRAINT billing_settings_min_check CHECK (late_fee_min_fen >= 0),
    -- Cap on a bill's late fee in basis points of its late-fee-bearing principal; NULL = none.
    late_fee_cap_bp           BIGINT CONSTRAINT billing_settings_cap_check CHECK (late_fee_cap_bp >= 0),
    -- Comma-separated utilities whose charges bear late fees.
    late_fee_utilities        TEXT NOT NULL DEFAULT 'electricity',
    -- A period's usage above this multiple (× 100) of the account's own average raises an alert.
    usage_alert_multiple_e2   BIGINT NOT NULL DEFAULT 300 CONSTRAINT billing_settings_alert_check CHECK (usage_alert_multiple_e2 > 100),
    updated_at                TIMESTAMPTZ NOT NULL,
    updated_by                TEXT NOT NULL
);

CREATE TABLE tariff_versions (
    id                    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id          BIGINT NOT NULL CONSTRAINT tariff_versions_community_fkey REFERENCES communities (id),
    utility               TEXT NOT NULL CONSTRAINT tariff_versions_utility_check CHECK (utility IN ('electricity', 'water')),
    customer_class        TEXT NOT NULL DEFAULT 'all' CONSTRAINT tariff_versions_class_check CHECK (customer_class IN ('all', 'residential', 'non_residential')),
    name                  TEXT NOT NULL,
    effective_from        DATE NOT NULL,
    -- first day no longer in effect (exclusive); NULL = until the next version
    effective_to          DATE,
    tier_basis            TEXT NOT NULL CONSTRAINT tariff_versions_basis_check CHECK (tier_basis IN ('period', 'annual')),
    tier_year_start_month INTEGER NOT NULL DEFAULT 1 CONSTRAINT tariff_versions_year_start_check CHECK (tier_year_start_month BETWEEN 1 AND 12),
    part_year             TEXT NOT NULL DEFAULT 'started_month' CONSTRAINT tariff_versions_part_year_check CHECK (part_year IN ('started_month', 'whole_months', 'none')),
    -- The version's thresholds, components and charges as JSON with prices as exact decimal
    -- strings. A version is an immutable document read whole; SQL never sums its prices.
    definition            TEXT NOT NULL,
    source_document       TEXT,
    created_at            TIMESTAMPTZ NOT NULL,
    created_by            TEXT NOT NULL,
    CONSTRAINT tariff_versions_dates_check CHECK (effective_to IS NULL OR effective_to > effective_from),
    CONSTRAINT tariff_versions_effective_key UNIQUE (community_id, utility, customer_class, effective_from)
);

CREATE FUNCTION tariff_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'tariff_version_immutable: a tariff version is never changed; add a new version'
        USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER tariff_versions_no_update BEFORE UPDATE ON tariff_versions
    FOR EACH ROW EXECUTE FUNCTION tariff_versions_immutable();

CREATE TABLE bill_runs (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id  BIGINT NOT NULL CONSTRAINT bill_runs_community_fkey REFERENCES communities (id),
    period        TEXT NOT NULL,
    actor         TEXT NOT NULL,
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ,
    bills_issued  BIGINT NOT NULL DEFAULT 0,
    adjustments   BIGINT NOT NULL DEFAULT 0,
    skipped       BIGINT NOT NULL DEFAULT 0,
    total_fen     BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE bills (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id    BIGINT NOT NULL CONSTRAINT bills_community_fkey REFERENCES communities (id),
    account_id      BIGINT NOT NULL CONSTRAINT bills_account_fkey REFERENCES accounts (id),
    period          TEXT NOT NULL CONSTRAINT bills_period_check CHECK (period ~ '^[0-9]{4}-[0-1][0-9]$'),
    kind            TEXT NOT NULL CONSTRAINT bills_kind_check CHECK (kind IN ('regular', 'adjustment')),
    adjusts_bill_id BIGINT CONSTRAINT bills_adjusts_fkey REFERENCES bills (id),
    reason          TEXT,
    status          TEXT NOT NULL DEFAULT 'draft' CONSTRAINT bills_status_check CHECK (status IN ('draft', 'issued')),
    total_fen       BIGINT NOT NULL,
    due_date        DATE NOT NULL,
    issued_at       TIMESTAMPTZ,
    run_id          BIGINT CONSTRAINT bills_run_fkey REFERENCES bill_runs (id),
    disputed        BOOLEAN NOT NULL DEFAULT FALSE,
    dispute_reason  TEXT,
    disputed_at     TIMESTAMPTZ,
    disputed_by     TEXT,
    -- an operator waived this bill's late fee; no more accrues
    late_fee_waived BOOLEAN NOT NULL DEFAULT FALSE,
    -- the last day the nightly accrual computed this bill's fee through
    late_fee_through DATE,
    created_at      TIMESTAMPTZ NOT NULL,
    created_by      TEXT NOT NULL,
    CONSTRAINT bills_adjusts_check CHECK ((kind = 'adjustment') = (adjusts_bill_id IS NOT NULL))
);
CREATE UNIQUE INDEX bills_account_period_key ON bills (account_id, period) WHERE kind = 'regular';
CREATE INDEX bills_account_idx ON bills (account_id, due_date);
CREATE INDEX bills_community_period_idx ON bills (community_id, period);

CREATE TABLE bill_lines (
    bill_id           BIGINT NOT NULL CONSTRAINT bill_lines_bill_fkey REFERENCES bills (id),
    line_no           INTEGER NOT NULL,
    utility           TEXT CONSTRAINT bill_lines_utility_check CHECK (utility IN ('electricity', 'water')),
    kind              TEXT NOT NULL CONSTRAINT bill_lines_kind_check CHECK (kind IN ('usage', 'fixed', 'per_area', 'adjustment')),
    component         TEXT NOT NULL,
    description       TEXT NOT NULL,
    tier              INTEGER,
    tou_period        TEXT,
    quantity_e4       BIGINT NOT NULL,
    unit_price_e6     BIGINT NOT NULL,
    amount_fen        BIGINT NOT NULL,
    tariff_version_id BIGINT CONSTRAINT bill_lines_tariff_fkey REFERENCES tariff_versions (id),
    -- the period whose usage this line rates (differs from the bill's for re-rated lines)
    usage_period      TEXT,
    date_from         DATE,
    date_to           DATE,
    -- how the line was computed (cumulative before, thresholds, days), as JSON
    trace             TEXT,
    -- the ledger account credited for this line when not revenue:{utility} (e.g. payable:sewage)
    ledger_code       TEXT,
    CONSTRAINT bill_lines_pkey PRIMARY KEY (bill_id, line_no)
);

-- The bill rules run once per statement over its transition tables, not once per row: a bill run
-- writes hundreds of thousands of lines, and a PL/pgSQL call per row was most of its time.
CREATE FUNCTION bill_lines_sealed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_lines n JOIN bills b ON b.id = n.bill_id WHERE b.status <> 'draft') THEN
        RAISE EXCEPTION 'bill_sealed: lines cannot be added to an issued bill; issue an adjustment bill'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER bill_lines_sealed AFTER INSERT ON bill_lines
    REFERENCING NEW TABLE AS new_lines FOR EACH STATEMENT EXECUTE FUNCTION bill_lines_sealed();
CREATE FUNCTION bill_lines_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'bill_immutable: bill lines are never updated or deleted; issue an adjustment bill'
        USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER bill_lines_no_change BEFORE UPDATE OR DELETE OR TRUNCATE ON bill_lines
    FOR EACH STATEMENT EXECUTE FUNCTION bill_lines_immutable();
CREATE FUNCTION bills_no_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'bill_immutable: bills are never deleted; issue an adjustment bill'
        USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER bills_no_delete BEFORE DELETE OR TRUNCATE ON bills
    FOR EACH STATEMENT EXECUTE FUNCTION bills_no_delete();
CREATE FUNCTION bills_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM old_bills o JOIN new_bills n ON n.id = o.id
        WHERE o.status = 'issued' AND (
            n.status IS DISTINCT FROM o.status OR n.total_fen IS DISTINCT FROM o.total_fen
            OR n.account_id IS DISTINCT FROM o.account_id OR n.period IS DISTINCT FROM o.period
            OR n.kind IS DISTINCT FROM o.kind OR n.due_date IS DISTINCT FROM o.due_date
            OR n.adjusts_bill_id IS DISTINCT FROM o.adjusts_bill_id)) THEN
        RAISE EXCEPTION 'bill_immutable: an issued bill never changes; issue an adjustment bill'
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF EXISTS (
        SELECT 1 FROM old_bills o JOIN new_bills n ON n.id = o.id
        LEFT JOIN (SELECT l.bill_id, COUNT(*) AS c, SUM(l.amount_fen) AS s FROM bill_lines l
                   WHERE l.bill_id IN (SELECT id FROM new_bills) GROUP BY l.bill_id) t ON t.bill_id = n.id
        WHERE o.status = 'draft' AND n.status = 'issued' AND (t.c IS NULL OR t.s <> n.total_fen)) THEN
        RAISE EXCEPTION 'bill_unbalanced: a bill needs at least one line and a total equal to the sum of its lines'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER bills_guard AFTER UPDATE ON bills
    REFERENCING OLD TABLE AS old_bills NEW TABLE AS new_bills FOR EACH STATEMENT EXECUTE FUNCTION bills_guard();

-- The readings a bill used, per meter.
CREATE TABLE bill_readings (
    bill_id         BIGINT NOT NULL CONSTRAINT bill_readings_bill_fkey REFERENCES bills (id),
    meter_id        BIGINT NOT NULL CONSTRAINT bill_readings_meter_fkey REFERENCES meters (id),
    utility         TEXT NOT NULL,
    from_reading_id BIGINT NOT NULL CONSTRAINT bill_readings_from_fkey REFERENCES readings (id),
    to_reading_id   BIGINT NOT NULL CONSTRAINT bill_readings_to_fkey REFERENCES readings (id),
    from_value_e4   BIGINT NOT NULL,
    to_value_e4     BIGINT NOT NULL,
    from_at         TIMESTAMPTZ NOT NULL,
    to_at           TIMESTAMPTZ NOT NULL,
    from_kind       TEXT NOT NULL,
    to_kind         TEXT NOT NULL,
    multiplier_e4   BIGINT NOT NULL,
    usage_e4        BIGINT NOT NULL,
    rollovers       INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT bill_readings_pkey PRIMARY KEY (bill_id, meter_id)
);

-- Usage counted per account, utility and period (negative rows correct earlier ones): the
-- annual ladder's cumulative counter and the history usage alerts compare against.
CREATE TABLE bill_usage (
    bill_id         BIGINT NOT NULL CONSTRAINT bill_usage_bill_fkey REFERENCES bills (id),
    community_id    BIGINT NOT NULL,
    account_id      BIGINT NOT NULL,
    utility         TEXT NOT NULL,
    usage_period    TEXT NOT NULL,
    tier_year_start DATE,
    quantity_e4     BIGINT NOT NULL,
    -- the period's closing reading was an estimate
    estimated       BOOLEAN NOT NULL DEFAULT FALSE,
    CONSTRAINT bill_usage_pkey PRIMARY KEY (bill_id, utility, usage_period)
);
CREATE INDEX bill_usage_account_idx ON bill_usage (account_id, utility, usage_period);

-- Where billing stopped on each meter: the last billed closing reading, and the last billed
-- reading that was not an estimate (a re-rating span starts there).
CREATE TABLE meter_bill_state (
    meter_id          BIGINT PRIMARY KEY CONSTRAINT meter_bill_state_meter_fkey REFERENCES meters (id),
    account_id        BIGINT NOT NULL,
    reading_id        BIGINT NOT NULL,
    read_at           TIMESTAMPTZ NOT NULL,
    value_e4          BIGINT NOT NULL,
    kind              TEXT NOT NULL,
    anchor_reading_id BIGINT NOT NULL,
    anchor_at         TIMESTAMPTZ NOT NULL,
    anchor_value_e4   BIGINT NOT NULL,
    -- the period of the bill that closed on the anchor; NULL when the anchor opened the meter
    anchor_period     TEXT,
    bill_id           BIGINT NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX meter_bill_state_account_idx ON meter_bill_state (account_id);

-- Money applied to a bill: positive amounts reduce its outstanding. Sources: a payment (the
-- payment's reference), the account's credit, or an adjustment bill (credit note) applied to it
-- (the credit note carries the matching negative allocation).
CREATE TABLE bill_allocations (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    bill_id         BIGINT NOT NULL CONSTRAINT bill_allocations_bill_fkey REFERENCES bills (id),
    account_id      BIGINT NOT NULL,
    amount_fen      BIGINT NOT NULL CONSTRAINT bill_allocations_amount_check CHECK (amount_fen <> 0),
    principal_fen   BIGINT NOT NULL,
    late_fee_fen    BIGINT NOT NULL,
    source          TEXT NOT NULL CONSTRAINT bill_allocations_source_check CHECK (source IN ('payment', 'credit', 'adjustment')),
    source_ref      TEXT NOT NULL,
    allocated_at    TIMESTAMPTZ NOT NULL,
    accounting_date DATE NOT NULL,
    CONSTRAINT bill_allocations_parts_check CHECK (principal_fen + late_fee_fen = amount_fen)
);
CREATE INDEX bill_allocations_bill_idx ON bill_allocations (bill_id);
CREATE INDEX bill_allocations_account_idx ON bill_allocations (account_id);

CREATE FUNCTION billing_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%_append_only: % rows are never changed or deleted; post a reversal', TG_ARGV[0], TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER bill_allocations_no_change BEFORE UPDATE OR DELETE ON bill_allocations
    FOR EACH ROW EXECUTE FUNCTION billing_append_only('allocation');

-- Late fees: each accrual posts the change of the bill's fee to date (the §3.6 computation
-- redone from the due date with what is known that night), with its trace; a waiver reverses
-- the fee and stops accrual.
CREATE TABLE late_fee_postings (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    bill_id         BIGINT NOT NULL CONSTRAINT late_fee_postings_bill_fkey REFERENCES bills (id),
    as_of           DATE NOT NULL,
    kind            TEXT NOT NULL CONSTRAINT late_fee_postings_kind_check CHECK (kind IN ('accrual', 'waiver')),
    fee_to_date_fen BIGINT NOT NULL,
    delta_fen       BIGINT NOT NULL,
    -- the exact accrued amount in yuan, before rounding and the minimum
    accrued_exact   TEXT NOT NULL,
    trace           TEXT NOT NULL,
    actor           TEXT NOT NULL,
    reason          TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    CONSTRAINT late_fee_postings_day_key UNIQUE (bill_id, as_of, kind)
);
CREATE INDEX late_fee_postings_bill_idx ON late_fee_postings (bill_id);
CREATE TRIGGER late_fee_postings_no_change BEFORE UPDATE OR DELETE ON late_fee_postings
    FOR EACH ROW EXECUTE FUNCTION billing_append_only('late_fee');

CREATE TABLE topups (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  BIGINT NOT NULL CONSTRAINT topups_account_fkey REFERENCES accounts (id),
    amount_fen  BIGINT NOT NULL CONSTRAINT topups_amount_check CHECK (amount_fen > 0),
    reference   TEXT NOT NULL,
    note        TEXT,
    actor       TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    CONSTRAINT topups_reference_key UNIQUE (reference)
);

CREATE TABLE usage_alerts (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id BIGINT NOT NULL,
    account_id   BIGINT NOT NULL CONSTRAINT usage_alerts_account_fkey REFERENCES accounts (id),
    utility      TEXT NOT NULL,
    period       TEXT NOT NULL,
    kind         TEXT NOT NULL CONSTRAINT usage_alerts_kind_check CHECK (kind IN ('high_usage', 'stopped_meter')),
    usage_e4     BIGINT NOT NULL,
    baseline_e4  BIGINT NOT NULL,
    detail       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    CONSTRAINT usage_alerts_key UNIQUE (account_id, utility, period, kind)
);
CREATE INDEX usage_alerts_community_idx ON usage_alerts (community_id, period);

CREATE TABLE meter_replacements (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    old_meter_id       BIGINT NOT NULL CONSTRAINT meter_replacements_old_fkey REFERENCES meters (id),
    new_meter_id       BIGINT NOT NULL CONSTRAINT meter_replacements_new_fkey REFERENCES meters (id),
    replaced_on        DATE NOT NULL,
    final_reading_id   BIGINT CONSTRAINT meter_replacements_final_fkey REFERENCES readings (id),
    initial_reading_id BIGINT CONSTRAINT meter_replacements_initial_fkey REFERENCES readings (id),
    reason             TEXT NOT NULL,
    work_order_ref     TEXT,
    read_by            TEXT,
    photo_ref          TEXT,
    actor              TEXT NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    CONSTRAINT meter_replacements_old_key UNIQUE (old_meter_id)
);

-- Time-of-use register values read with a reading (the reading's own value is the total).
CREATE TABLE reading_registers (
    reading_id BIGINT NOT NULL CONSTRAINT reading_registers_reading_fkey REFERENCES readings (id),
    register   TEXT NOT NULL CONSTRAINT reading_registers_register_check CHECK (register IN ('sharp', 'peak', 'flat', 'valley')),
    value_e4   BIGINT NOT NULL CONSTRAINT reading_registers_value_check CHECK (value_e4 >= 0),
    CONSTRAINT reading_registers_pkey PRIMARY KEY (reading_id, register)
);
