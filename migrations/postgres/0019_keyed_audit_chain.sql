-- The audit chain is keyed: each record carries a MAC under the audit key (kept outside the
-- database; records from before this release have none), and heads are signed with Ed25519
-- at intervals and on every export.
alter table audit_log add column mac text;

create table audit_signatures (
    seq bigint primary key,
    hash text not null,
    at bigint not null,
    signature text not null
);
create trigger audit_signatures_no_change before update or delete on audit_signatures
    for each row execute function audit_log_append_only();
