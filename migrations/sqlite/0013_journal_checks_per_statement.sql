-- Kept in step with migrations/postgres/0013_journal_checks_per_statement.sql, which turns
-- PostgreSQL's two journal insert checks from PL/pgSQL row triggers into statement triggers.
-- SQLite's triggers run inside its own VM at a fraction of that cost and SQLite has no
-- statement-level triggers, so nothing changes here.
SELECT 1;
