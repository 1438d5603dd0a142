-- 0003 API tokens (SQLite). Staff API clients authenticate with a bearer token carrying a role
-- (admin, operator, finance, read_only). Only the SHA-256 of a token is stored; the token itself
-- is shown once, when created.
CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CONSTRAINT api_tokens_role_check CHECK (role IN ('admin', 'operator', 'finance', 'read_only')),
    token_sha256  TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    revoked_at    TEXT,
    CONSTRAINT api_tokens_hash_key UNIQUE (token_sha256)
);
