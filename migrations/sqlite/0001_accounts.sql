-- Accounts, sessions, API tokens, sign-in throttling and the hash-chained audit log.
-- Times are unix seconds (integer) so that both dialects store and compare them the same way.

create table users (
    user_id integer primary key,
    email text not null unique,
    name text not null,
    roles text not null,
    password_hash text,
    totp_seed blob,
    totp_pending blob,
    totp_last_step integer not null default 0,
    disabled integer not null default 0,
    created_at integer not null
);

create table enrolment_links (
    token_hash text primary key,
    user_id integer references users (user_id) on delete cascade,
    purpose text not null,
    created_at integer not null,
    expires_at integer not null,
    used_at integer
);

create table recovery_codes (
    code_hash text primary key,
    user_id integer not null references users (user_id) on delete cascade,
    used_at integer
);

create table sessions (
    session_hash text primary key,
    user_id integer not null references users (user_id) on delete cascade,
    stage text not null,
    created_at integer not null,
    last_seen_at integer not null,
    address text not null,
    user_agent text not null
);
create index sessions_user on sessions (user_id);

create table api_tokens (
    token_id integer primary key,
    user_id integer not null references users (user_id) on delete cascade,
    name text not null,
    token_hash text not null unique,
    scopes text not null,
    created_at integer not null,
    expires_at integer not null,
    last_used_at integer,
    revoked_at integer
);
create index api_tokens_user on api_tokens (user_id);

create table sign_in_failures (
    failure_id integer primary key,
    throttle_key text not null,
    at integer not null
);
create index sign_in_failures_key on sign_in_failures (throttle_key, at);

create table audit_log (
    seq integer primary key,
    at integer not null,
    actor_id integer,
    actor text not null,
    action text not null,
    subject text not null,
    address text not null,
    details text not null,
    prev_hash text not null unique,
    hash text not null
);
create index audit_log_at on audit_log (at);
create index audit_log_action on audit_log (action);

-- Append-only: the service never updates or deletes audit records.
create trigger audit_log_no_update before update on audit_log
begin
    select raise(abort, 'the audit log is append-only');
end;
create trigger audit_log_no_delete before delete on audit_log
begin
    select raise(abort, 'the audit log is append-only');
end;
