-- 0007 payments (PostgreSQL): merchants, payment orders and the bills they pay, the raw gateway
-- events (unique per gateway event), refunds, receipts, rejected callbacks and flags for finance.
--
-- Exactly once (README "Payments"): a callback's event row, the order's move to `paid`, the
-- bills' allocations, the journal entry (`payment.apply` / order number) and the receipt commit
-- in ONE transaction. The event is unique per (channel, merchant, gateway event id) and the
-- journal is unique per (kind, reference), so a second copy of a callback — concurrent or a day
-- later — finds its work done and changes nothing.
--
-- `payment_bill_locks` holds one row per bill with a live (created, unpaid) order: its primary
-- key makes a second live order for the same bill impossible, whatever the concurrency; the row
-- goes when the order is paid, closed or superseded.
--
-- An order's status only moves forward: created → paid, created → closed, and closed → paid
-- (a payment that arrives for an order we closed is applied and flagged, never lost). Refunds
-- are their own rows; `refunded_fen` on the order is what succeeded.
-- SQLite: timestamps are RFC 3339 text, booleans 0/1; PostgreSQL: TIMESTAMPTZ, BOOLEAN, BYTEA.

CREATE TABLE payment_merchants (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id  BIGINT NOT NULL CONSTRAINT payment_merchants_community_fkey REFERENCES communities (id),
    channel       TEXT NOT NULL CONSTRAINT payment_merchants_channel_check CHECK (channel IN ('alipay', 'wechatpay', 'unionpay')),
    merchant_id   TEXT NOT NULL,
    fee_rate_ppm  INTEGER NOT NULL CONSTRAINT payment_merchants_fee_check CHECK (fee_rate_ppm >= 0),
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    CONSTRAINT payment_merchants_key UNIQUE (channel, merchant_id),
    CONSTRAINT payment_merchants_community_channel_key UNIQUE (community_id, channel)
);

CREATE TABLE payment_orders (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_no         TEXT NOT NULL,
    community_id     BIGINT NOT NULL CONSTRAINT payment_orders_community_fkey REFERENCES communities (id),
    account_id       BIGINT NOT NULL CONSTRAINT payment_orders_account_fkey REFERENCES accounts (id),
    channel          TEXT NOT NULL CONSTRAINT payment_orders_channel_check CHECK (channel IN ('alipay', 'wechatpay', 'unionpay')),
    merchant_id      TEXT NOT NULL,
    method           TEXT NOT NULL CONSTRAINT payment_orders_method_check CHECK (method IN ('qr', 'h5', 'jsapi', 'web')),
    purpose          TEXT NOT NULL CONSTRAINT payment_orders_purpose_check CHECK (purpose IN ('bills', 'topup')),
    amount_fen       BIGINT NOT NULL CONSTRAINT payment_orders_amount_check CHECK (amount_fen > 0),
    subject          TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'created' CONSTRAINT payment_orders_status_check CHECK (status IN ('created', 'paid', 'closed')),
    -- what the payer needs (JSON PayerAction), kept so a reused order answers the same
    payer_action     TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    expires_at       TIMESTAMPTZ NOT NULL,
    created_by       TEXT NOT NULL,
    gateway_txn_id   TEXT,
    paid_amount_fen  BIGINT,
    paid_at          TIMESTAMPTZ,
    -- what the payment put to the account's credit (overpayment or top-up)
    to_credit_fen    BIGINT NOT NULL DEFAULT 0,
    refunded_fen     BIGINT NOT NULL DEFAULT 0,
    closed_at        TIMESTAMPTZ,
    close_reason     TEXT,
    superseded_by    TEXT,
    -- the next active query (compensation), NULL once final
    next_query_at    TIMESTAMPTZ,
    query_attempts   INTEGER NOT NULL DEFAULT 0,
    updated_at       TIMESTAMPTZ NOT NULL,
    CONSTRAINT payment_orders_order_no_key UNIQUE (order_no),
    CONSTRAINT payment_orders_refunded_check CHECK (refunded_fen >= 0 AND refunded_fen <= COALESCE(paid_amount_fen, 0)),
    CONSTRAINT payment_orders_paid_check CHECK ((status = 'paid') = (paid_at IS NOT NULL))
);
CREATE INDEX payment_orders_account_idx ON payment_orders (account_id, created_at);
CREATE INDEX payment_orders_pending_idx ON payment_orders (status, next_query_at);
CREATE INDEX payment_orders_expiry_idx ON payment_orders (status, expires_at);

CREATE TABLE payment_order_bills (
    order_id        BIGINT NOT NULL CONSTRAINT payment_order_bills_order_fkey REFERENCES payment_orders (id),
    bill_id         BIGINT NOT NULL CONSTRAINT payment_order_bills_bill_fkey REFERENCES bills (id),
    -- the bill's outstanding amount when the order was made
    amount_fen      BIGINT NOT NULL CONSTRAINT payment_order_bills_amount_check CHECK (amount_fen > 0),
    CONSTRAINT payment_order_bills_pkey PRIMARY KEY (order_id, bill_id)
);
CREATE INDEX payment_order_bills_bill_idx ON payment_order_bills (bill_id);

CREATE TABLE payment_bill_locks (
    bill_id         BIGINT NOT NULL CONSTRAINT payment_bill_locks_bill_fkey REFERENCES bills (id),
    order_id        BIGINT NOT NULL CONSTRAINT payment_bill_locks_order_fkey REFERENCES payment_orders (id),
    CONSTRAINT payment_bill_locks_pkey PRIMARY KEY (bill_id)
);
CREATE INDEX payment_bill_locks_order_idx ON payment_bill_locks (order_id);

-- Every verified gateway event, stored raw (headers and the exact body bytes) before it is
-- applied; `outcome` says what it did.
CREATE TABLE payment_events (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel         TEXT NOT NULL,
    merchant_id     TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    kind            TEXT NOT NULL CONSTRAINT payment_events_kind_check CHECK (kind IN ('payment', 'refund', 'query')),
    order_no        TEXT NOT NULL,
    refund_no       TEXT,
    headers         TEXT NOT NULL,
    body            BYTEA NOT NULL,
    fields          TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL,
    CONSTRAINT payment_events_gateway_event_key UNIQUE (channel, merchant_id, event_id)
);
CREATE INDEX payment_events_order_idx ON payment_events (order_no);

-- Callbacks that were not accepted (unverifiable, malformed, unknown merchant), with the reason.
-- Only a digest and a bounded prefix of the body are kept.
CREATE TABLE payment_rejected_callbacks (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel         TEXT NOT NULL,
    merchant_id     TEXT NOT NULL,
    reason          TEXT NOT NULL,
    body_sha256     TEXT NOT NULL,
    body_prefix     BYTEA NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL
);

CREATE TABLE payment_refunds (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    refund_no         TEXT NOT NULL,
    order_id          BIGINT NOT NULL CONSTRAINT payment_refunds_order_fkey REFERENCES payment_orders (id),
    amount_fen        BIGINT NOT NULL CONSTRAINT payment_refunds_amount_check CHECK (amount_fen > 0),
    reason            TEXT NOT NULL,
    requested_by      TEXT NOT NULL,
    status            TEXT NOT NULL CONSTRAINT payment_refunds_status_check CHECK (status IN ('requested', 'processing', 'succeeded', 'failed')),
    gateway_refund_id TEXT,
    failure           TEXT,
    requested_at      TIMESTAMPTZ NOT NULL,
    refunded_at       TIMESTAMPTZ,
    updated_at        TIMESTAMPTZ NOT NULL,
    CONSTRAINT payment_refunds_refund_no_key UNIQUE (refund_no)
);
CREATE INDEX payment_refunds_order_idx ON payment_refunds (order_id);

CREATE TABLE payment_receipts (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    receipt_no      TEXT NOT NULL,
    order_id        BIGINT NOT NULL CONSTRAINT payment_receipts_order_fkey REFERENCES payment_orders (id),
    account_id      BIGINT NOT NULL CONSTRAINT payment_receipts_account_fkey REFERENCES accounts (id),
    amount_fen      BIGINT NOT NULL,
    channel         TEXT NOT NULL,
    gateway_txn_id  TEXT NOT NULL,
    -- JSON: [{bill_id, period, principal_fen, late_fee_fen}], and the part put to credit
    bills           TEXT NOT NULL,
    to_credit_fen   BIGINT NOT NULL,
    paid_at         TIMESTAMPTZ NOT NULL,
    issued_at       TIMESTAMPTZ NOT NULL,
    CONSTRAINT payment_receipts_receipt_no_key UNIQUE (receipt_no),
    CONSTRAINT payment_receipts_order_key UNIQUE (order_id)
);
CREATE INDEX payment_receipts_account_idx ON payment_receipts (account_id);

-- What finance must look at: amount or merchant mismatches, payments on closed orders,
-- "successful with defect" answers, refunds we did not ask for.
CREATE TABLE payment_flags (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            TEXT NOT NULL CONSTRAINT payment_flags_kind_check CHECK (kind IN ('amount_mismatch', 'merchant_mismatch', 'paid_after_close', 'unknown_order', 'unknown_refund', 'refund_mismatch', 'gateway_defect')),
    channel         TEXT NOT NULL,
    merchant_id     TEXT NOT NULL,
    order_no        TEXT,
    detail          TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    resolved_at     TIMESTAMPTZ,
    resolved_by     TEXT
);
CREATE INDEX payment_flags_open_idx ON payment_flags (resolved_at, created_at);

-- The allocation a callback runs reads each open bill's adjustments (`bills.adjusts_bill_id`);
-- without this index that is a scan of every bill, per bill, inside the callback's transaction.
CREATE INDEX bills_adjusts_idx ON bills (adjusts_bill_id);
