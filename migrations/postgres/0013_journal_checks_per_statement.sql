-- The journal's two insert checks, once per statement instead of once per row.
--
-- `journal_lines_entry_sealed` and `journal_entries_balanced` (0001) were row triggers in
-- PL/pgSQL: every journal line and every entry paid a trigger call and an SPI query. A bill run
-- posts an entry with three or four lines per bill, so 100,000 bills made about 450,000 such
-- calls. The rules stay exactly as they were — no line may be added to an entry already posted,
-- and every entry needs at least two lines summing to zero — but each is now checked over the
-- statement's transition table: one call per INSERT, each row probed through the primary key
-- of `journal_entries` or the `(entry_id, line_no)` key of `journal_lines`. The planner cannot
-- know a transition table's size, so the functions pin the probe plan (no hash or merge join,
-- which would read either table whole) and turn JIT off (a forced plan looks expensive enough
-- to JIT-compile on every statement). Same errors, same codes.
DROP TRIGGER journal_lines_entry_sealed ON journal_lines;
DROP TRIGGER journal_entries_balanced ON journal_entries;

CREATE OR REPLACE FUNCTION journal_lines_entry_sealed() RETURNS trigger LANGUAGE plpgsql
    SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_lines n JOIN journal_entries e ON e.id = n.entry_id) THEN
        RAISE EXCEPTION 'journal_entry_sealed: lines cannot be added to a posted journal entry'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER journal_lines_entry_sealed AFTER INSERT ON journal_lines
    REFERENCING NEW TABLE AS new_lines FOR EACH STATEMENT EXECUTE FUNCTION journal_lines_entry_sealed();

CREATE OR REPLACE FUNCTION journal_entries_balanced() RETURNS trigger LANGUAGE plpgsql
    SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM new_entries e
        CROSS JOIN LATERAL (SELECT COUNT(*) AS n, COALESCE(SUM(l.amount_fen), 0) AS total
                            FROM journal_lines l WHERE l.entry_id = e.id) t
        WHERE t.n < 2 OR t.total <> 0) THEN
        RAISE EXCEPTION 'journal_entry_unbalanced: a journal entry needs at least two lines summing to zero'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER journal_entries_balanced AFTER INSERT ON journal_entries
    REFERENCING NEW TABLE AS new_entries FOR EACH STATEMENT EXECUTE FUNCTION journal_entries_balanced();
