-- The bill guard's checks, planned so they stay cheap as the tables grow.
--
-- `bills_guard` (0004) runs once per UPDATE of bills over its transition tables. Its issue
-- check summed `bill_lines` through an IN-subquery, and the planner, which cannot know a
-- transition table's size, chose plans that read far more than the statement's bills: an
-- UPDATE of 5,000 issued bills (the nightly late-fee accrual, a batch of disputes) took 2.4 s
-- with 800,000 stored lines, without the guard 0.1 s. Now old and new rows are matched by a hash
-- join (nested loops over two unindexed transition tables are quadratic) and each issued bill's
-- lines are summed by a probe of the lines' primary key. Forcing the join makes the estimated
-- cost huge, which would have PostgreSQL JIT-compile this small query on every statement
-- (measured: 158 ms), so the guard also turns JIT off. Same rules, same errors.
CREATE OR REPLACE FUNCTION bills_guard() RETURNS trigger LANGUAGE plpgsql
    SET enable_nestloop = off SET jit = off AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM old_bills o JOIN new_bills n ON n.id = o.id
        WHERE o.status = 'issued' AND (
            n.status IS DISTINCT FROM o.status OR n.total_fen IS DISTINCT FROM o.total_fen
            OR n.account_id IS DISTINCT FROM o.account_id OR n.period IS DISTINCT FROM o.period
            OR n.kind IS DISTINCT FROM o.kind OR n.due_date IS DISTINCT FROM o.due_date
            OR n.adjusts_bill_id IS DISTINCT FROM o.adjusts_bill_id)) THEN
        RAISE EXCEPTION 'bill_immutable: an issued bill never changes; issue an adjustment bill'
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF EXISTS (
        SELECT 1 FROM old_bills o JOIN new_bills n ON n.id = o.id
        CROSS JOIN LATERAL (SELECT COUNT(*) AS c, SUM(l.amount_fen) AS s FROM bill_lines l WHERE l.bill_id = n.id) t
        WHERE o.status = 'draft' AND n.status = 'issued' AND (t.c = 0 OR t.s <> n.total_fen)) THEN
        RAISE EXCEPTION 'bill_unbalanced: a bill needs at least one line and a total equal to the sum of its lines'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
