-- The mail outbox, job leases, the audit chain head and sealed server secrets.
--
-- The mail outbox: written in the same transaction as the event that causes the mail, then
-- delivered by a worker. A worker claims a mail by setting claimed_by/lease_until in one
-- conditional update, so several server instances never send the same mail twice.
-- state: 'queued' (waiting or due), 'sent', 'failed' (gave up after the last attempt).
-- After delivery the body is erased (it may hold a one-time code); the row stays as a record.

create table mail_outbox (
    mail_id integer primary key,
    recipient text not null,
    subject text not null,
    body_text text not null,
    created_at integer not null,
    state text not null default 'queued',
    attempts integer not null default 0,
    next_attempt_at integer not null,
    claimed_by text,
    lease_until integer,
    sent_at integer,
    last_error text
);
create index mail_outbox_due on mail_outbox (state, next_attempt_at);

-- Leases for background jobs that only one instance may run at a time (e.g. the sweeper):
-- taken with one conditional upsert, released or left to run out.
create table job_leases (
    name text primary key,
    holder text not null,
    lease_until integer not null
);

-- The head of the audit chain, one row. Appending updates it first, which holds a row lock
-- (PostgreSQL) or the write lock (SQLite) until the appending transaction ends: appends are
-- serialised and each lands in the same transaction as the action it records.
create table audit_head (
    id integer primary key,
    seq integer not null,
    hash text not null
);
insert into audit_head (id, seq, hash)
select 1,
       coalesce(max(seq), 0),
       coalesce((select hash from audit_log order by seq desc limit 1),
                '0000000000000000000000000000000000000000000000000000000000000000')
from audit_log;

-- Server-wide secrets sealed under the server key (AES-256-GCM), e.g. the root of the keyed
-- hashes, so that rotating the server key re-seals them instead of invalidating what they key.
create table server_secrets (
    name text primary key,
    sealed blob not null
);
