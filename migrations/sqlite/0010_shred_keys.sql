-- Crypto-shredding on disk: a transfer's age header (the only thing that opens its body) moves
-- to its own small table. A shred deletes the row; SQLite zeroes the freed space
-- (secure_delete) and the WAL is truncated after it; on PostgreSQL the sweeper rewrites this
-- table (vacuum full) so no dead row version keeps the header. transfers.age_header stays,
-- always null, so older queries keep working.
-- erasure_due: a shred happened and freed space still has to be rewritten (a generation
-- number, so a shred during the rewrite is not forgotten).

create table transfer_keys (
    transfer_id integer primary key references transfers (transfer_id),
    age_header blob not null
);

insert into transfer_keys (transfer_id, age_header)
select transfer_id, age_header from transfers where age_header is not null;

update transfers set age_header = null where age_header is not null;

create table erasure_due (
    what text primary key,
    generation integer not null
);
