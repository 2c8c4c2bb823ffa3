-- The audit chain is keyed: each record carries a MAC under the audit key (kept outside the
-- database; records from before this release have none), and heads are signed with Ed25519
-- at intervals and on every export.
alter table audit_log add column mac text;

create table audit_signatures (
    seq integer primary key,
    hash text not null,
    at bigint not null,
    signature text not null
);
create trigger audit_signatures_no_update before update on audit_signatures
begin
    select raise(abort, 'the audit log is append-only');
end;
create trigger audit_signatures_no_delete before delete on audit_signatures
begin
    select raise(abort, 'the audit log is append-only');
end;
