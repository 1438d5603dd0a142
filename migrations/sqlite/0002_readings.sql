-- 0002 readings (SQLite): meter concentrators and their push keys, the replay guard, readings.
--
-- A reading is a fact and is never edited: a reading held for review is accepted or rejected by
-- an operator (status change, recorded in the audit log), and a wrong reading is superseded by a
-- new one, never overwritten. (meter_id, read_at) is unique: the same reading pushed twice is
-- acknowledged once; a different value for the same meter and time is refused.
-- Register values are stored × 10^4 (value_e4), like every quantity.
-- SQLite: timestamps are RFC 3339 text; PostgreSQL: TIMESTAMPTZ.

CREATE TABLE devices (
    id            INTEGER PRIMARY KEY,
    community_id  INTEGER NOT NULL CONSTRAINT devices_community_fkey REFERENCES communities (id),
    key_id        TEXT NOT NULL,
    -- the HMAC-SHA256 key, hex; needed to verify, so it is stored (protect the database file)
    secret_hex    TEXT NOT NULL,
    name          TEXT NOT NULL,
    active        INTEGER NOT NULL DEFAULT 1,
    created_at    TEXT NOT NULL,
    CONSTRAINT devices_key_id_key UNIQUE (key_id)
);

CREATE TABLE push_signatures (
    key_id        TEXT NOT NULL,
    signature     TEXT NOT NULL,
    seen_at       TEXT NOT NULL,
    CONSTRAINT push_signatures_pkey PRIMARY KEY (key_id, signature)
);
CREATE INDEX push_signatures_seen_idx ON push_signatures (seen_at);

CREATE TABLE readings (
    id            INTEGER PRIMARY KEY,
    meter_id      INTEGER NOT NULL CONSTRAINT readings_meter_fkey REFERENCES meters (id),
    read_at       TEXT NOT NULL,
    value_e4      INTEGER NOT NULL CONSTRAINT readings_value_check CHECK (value_e4 >= 0),
    kind          TEXT NOT NULL CONSTRAINT readings_kind_check CHECK (kind IN ('actual', 'estimated', 'final', 'initial')),
    source        TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'valid' CONSTRAINT readings_status_check CHECK (status IN ('valid', 'held', 'rejected')),
    hold_reason   TEXT,
    -- the register wrapped between the previous reading and this one
    rollover      INTEGER NOT NULL DEFAULT 0,
    reviewed_by   TEXT,
    reviewed_at   TEXT,
    review_note   TEXT,
    created_at    TEXT NOT NULL,
    CONSTRAINT readings_meter_time_key UNIQUE (meter_id, read_at)
);
CREATE INDEX readings_status_idx ON readings (status);
