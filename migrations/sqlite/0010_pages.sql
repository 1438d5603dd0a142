-- 0010 pages (SQLite): the resident account look-up's attempt log.
--
-- A resident without a pay link looks their account up by community, account code and the last
-- four digits of the mobile number on file. Four digits are guessable, so failures are counted
-- per account and per source address within a window (like staff sign-in's lock-out) and the
-- look-up is refused once too many have failed. Append-only in practice; old rows may be pruned.
-- `account_key` is "COMMUNITY/ACCOUNT" as typed (trimmed, bounded): counted whether or not such an
-- account exists, so probing for account codes locks out just the same.
-- SQLite: timestamps are RFC 3339 text and booleans integers; PostgreSQL: TIMESTAMPTZ, BOOLEAN.

CREATE TABLE resident_lookups (
    id           INTEGER PRIMARY KEY,
    at           TEXT NOT NULL,
    account_key  TEXT NOT NULL,
    source       TEXT NOT NULL,
    succeeded    INTEGER NOT NULL
);
CREATE INDEX resident_lookups_key_idx ON resident_lookups (account_key, at);
CREATE INDEX resident_lookups_source_idx ON resident_lookups (source, at);
