-- Nothing changes in PostgreSQL: SQLite's migration 4 moves its kv values and template code
-- out of the key b-tree (see migrations/sqlite/0004_rowid_values.sql); a
-- PostgreSQL table keeps rows in its heap (large values in TOAST) and its
-- primary key index holds only the key columns. The version stays in step
-- with SQLite's.
SELECT 1;
