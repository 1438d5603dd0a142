-- 0006 reminders (SQLite): the outbox of reminder messages, their attempts, per-channel opt-outs,
-- and application secrets (the generated pay-link secret).
--
-- The outbox rule (README "Reminders"): a message is a row before anything is sent; each attempt
-- is a row written BEFORE the provider is called; an attempt whose outcome is unknown (timeout,
-- connection lost, sender killed) is settled by the provider's status query, never by sending
-- again. `dedupe_key` (account, track, step, channel, bill set) is unique, so the same step can
-- never be enqueued twice for the same person and channel.
--
-- Bills arrive in another migration: `bill_ids` / `bill_steps` hold bill ids as plain JSON text,
-- without a foreign key (the later join may add one).
-- SQLite: timestamps are RFC 3339 text; PostgreSQL: TIMESTAMPTZ. Ids: INTEGER PRIMARY KEY here,
-- BIGINT identities there.

CREATE TABLE reminder_outbox (
    id                  INTEGER PRIMARY KEY,
    account_id          INTEGER NOT NULL CONSTRAINT reminder_outbox_account_fkey REFERENCES accounts (id),
    community_id        INTEGER NOT NULL CONSTRAINT reminder_outbox_community_fkey REFERENCES communities (id),
    -- the daily cap counts per household (premises)
    household           TEXT NOT NULL,
    track               TEXT NOT NULL CONSTRAINT reminder_outbox_track_check CHECK (track IN ('electricity', 'water', 'property_fee')),
    step                TEXT NOT NULL,
    channel             TEXT NOT NULL CONSTRAINT reminder_outbox_channel_check CHECK (channel IN ('sms', 'email', 'letter')),
    -- JSON arrays: bill ids, and [bill id, step] pairs (a combined message records a step per bill)
    bill_ids            TEXT NOT NULL,
    bill_steps          TEXT NOT NULL,
    dedupe_key          TEXT NOT NULL,
    -- aliyun | tencent | smtp | letter, and the configuration profile (community code) used
    provider            TEXT NOT NULL,
    profile             TEXT NOT NULL,
    -- phone number or e-mail address (personal data: masked in logs, never in URLs)
    recipient           TEXT NOT NULL,
    message_kind        TEXT NOT NULL,
    -- the exact content sent (evidence of the notice): SMS template code and variables, or the e-mail
    content_json        TEXT NOT NULL,
    legally_required    INTEGER NOT NULL DEFAULT 0,
    status              TEXT NOT NULL DEFAULT 'queued' CONSTRAINT reminder_outbox_status_check
                          CHECK (status IN ('queued', 'sending', 'unknown', 'sent', 'delivered', 'failed', 'awaiting_staff', 'served', 'cancelled')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    provider_message_id TEXT,
    delivery_status     TEXT,
    last_error          TEXT,
    not_before          TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    last_attempt_at     TEXT,
    sent_at             TEXT,
    delivered_at        TEXT,
    CONSTRAINT reminder_outbox_dedupe_key UNIQUE (dedupe_key)
);
CREATE INDEX reminder_outbox_account_idx ON reminder_outbox (account_id, created_at);
CREATE INDEX reminder_outbox_household_idx ON reminder_outbox (household, created_at);
CREATE INDEX reminder_outbox_status_idx ON reminder_outbox (status);

CREATE TABLE reminder_attempts (
    id                  INTEGER PRIMARY KEY,
    outbox_id           INTEGER NOT NULL CONSTRAINT reminder_attempts_outbox_fkey REFERENCES reminder_outbox (id),
    attempt_no          INTEGER NOT NULL,
    started_at          TEXT NOT NULL,
    finished_at         TEXT,
    -- pending: recorded, provider not (yet) answered; not_sent: the status query proved it never arrived
    outcome             TEXT NOT NULL DEFAULT 'pending' CONSTRAINT reminder_attempts_outcome_check
                          CHECK (outcome IN ('pending', 'accepted', 'transient', 'permanent', 'unknown', 'not_sent')),
    provider_message_id TEXT,
    code                TEXT,
    message             TEXT,
    CONSTRAINT reminder_attempts_outbox_attempt_key UNIQUE (outbox_id, attempt_no)
);

CREATE TABLE reminder_opt_outs (
    account_id          INTEGER NOT NULL CONSTRAINT reminder_opt_outs_account_fkey REFERENCES accounts (id),
    channel             TEXT NOT NULL CONSTRAINT reminder_opt_outs_channel_check CHECK (channel IN ('sms', 'email')),
    -- link | sms_reply | staff
    source              TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    CONSTRAINT reminder_opt_outs_pkey PRIMARY KEY (account_id, channel)
);

CREATE TABLE app_secrets (
    name                TEXT NOT NULL,
    value               TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    CONSTRAINT app_secrets_pkey PRIMARY KEY (name)
);
