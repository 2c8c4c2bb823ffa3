-- PostgreSQL dates each shred by its transaction so the rewrite of freed space waits for older
-- snapshots; SQLite's WAL truncation already waits for its readers. The column keeps the two
-- schemas alike and stays null here.
alter table erasure_due add column shred_xid integer;
