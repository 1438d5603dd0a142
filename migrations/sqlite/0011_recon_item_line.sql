-- 0011 (SQLite): the line of the settlement file a reconciliation item's row is on.
--
-- Finance reads the row as the gateway wrote it (original_line) and, now, where it is in the
-- file: a million-row day is read without every row's text, and the reported rows' text is read
-- back from the stored file by this number. NULL for items about our ledger alone.
ALTER TABLE recon_items ADD COLUMN file_line INTEGER;
