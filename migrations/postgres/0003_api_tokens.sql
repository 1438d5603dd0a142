-- 0003 API tokens (PostgreSQL). Staff API clients authenticate with a bearer token carrying a
-- role (admin, operator, finance, read_only). Only the SHA-256 of a token is stored; the token
-- itself is shown once, when created.
CREATE TABLE api_tokens (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CONSTRAINT api_tokens_role_check CHECK (role IN ('admin', 'operator', 'finance', 'read_only')),
    token_sha256  TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    revoked_at    TIMESTAMPTZ,
    CONSTRAINT api_tokens_hash_key UNIQUE (token_sha256)
);
