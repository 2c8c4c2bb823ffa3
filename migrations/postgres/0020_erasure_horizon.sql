-- The rewrite of freed space (vacuum full) copies a deleted row version that a snapshot still
-- open could see, so it is not done until every snapshot in the database is younger than the
-- last shred. shred_xid: the 64-bit id (txid_current) of the youngest shred's transaction.
-- A shred due from before this release is dated now, which only makes it wait for what is open.
alter table erasure_due add column shred_xid bigint;
update erasure_due set shred_xid = txid_current();
