-- Kept in step with migrations/postgres/0012_bills_guard_planned.sql, which replans
-- PostgreSQL's statement-level issue guard. SQLite's guard (`bills_issue_balanced`, 0004) is a
-- row trigger that already sums each issued bill's lines by a probe of the lines' primary key,
-- so nothing changes here.
SELECT 1;
