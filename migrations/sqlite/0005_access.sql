-- 0005 Access (SQLite): staff users who sign in to the pages, their server-side sessions, and the
-- sign-in attempts that drive lock-out.
--
-- * staff_users: one row per person; `password_hash` is an argon2id PHC string (never the
--   password). `role` is one of the same four roles as api_tokens. A disabled user cannot sign in
--   and their sessions stop working.
-- * staff_sessions: a session is found by the SHA-256 of its cookie value (the value itself is
--   never stored, so a leaked database does not hand out sessions). `csrf_token` is the
--   per-session token every state-changing form or cookie-authenticated request must carry.
--   Sessions expire at `expires_at` and end at `revoked_at` (sign-out, password change).
-- * sign_in_attempts: every attempt, kept for counting failures per user name and per source
--   address within the lock-out window. Append-only in practice; old rows may be pruned.
-- * api_tokens gains `revoked_by` for the revoke API (the audit log has the full story).
--
-- Differences from the PostgreSQL tree: timestamps are RFC 3339 TEXT; booleans are INTEGER 0/1;
-- INTEGER PRIMARY KEY instead of identity columns. Constraint names are the same.

CREATE TABLE staff_users (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL,
    role           TEXT NOT NULL CONSTRAINT staff_users_role_check CHECK (role IN ('admin', 'operator', 'finance', 'read_only')),
    password_hash  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    disabled_at    TEXT,
    CONSTRAINT staff_users_name_key UNIQUE (name),
    CONSTRAINT staff_users_name_check CHECK (length(name) BETWEEN 1 AND 64)
);

CREATE TABLE staff_sessions (
    id             INTEGER PRIMARY KEY,
    token_sha256   TEXT NOT NULL,
    user_id        INTEGER NOT NULL CONSTRAINT staff_sessions_user_fkey REFERENCES staff_users (id),
    csrf_token     TEXT NOT NULL,
    source         TEXT,
    created_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    revoked_at     TEXT,
    CONSTRAINT staff_sessions_token_key UNIQUE (token_sha256)
);
CREATE INDEX staff_sessions_user_idx ON staff_sessions (user_id);

CREATE TABLE sign_in_attempts (
    id             INTEGER PRIMARY KEY,
    at             TEXT NOT NULL,
    user_name      TEXT NOT NULL,
    source         TEXT NOT NULL,
    succeeded      INTEGER NOT NULL CONSTRAINT sign_in_attempts_succeeded_check CHECK (succeeded IN (0, 1))
);
CREATE INDEX sign_in_attempts_user_idx ON sign_in_attempts (user_name, at);
CREATE INDEX sign_in_attempts_source_idx ON sign_in_attempts (source, at);

ALTER TABLE api_tokens ADD COLUMN revoked_by TEXT;
