-- Transfers: the contacts directory with verification records, allowed recipient domains,
-- policy settings, transfers (the age header here, the body in blob storage), their files,
-- recipients' one-time codes and sessions, and downloads.
-- Times are unix seconds; flags are 0/1; sealed columns are AES-256-GCM under the server key.

create table contacts (
    contact_id integer primary key,
    email text not null unique,
    name text not null,
    organisation text not null,
    job_title text not null,
    phone text not null,
    created_by integer references users (user_id),
    created_at integer not null,
    updated_at integer not null,
    archived integer not null default 0
);

create table contact_verifications (
    verification_id integer primary key,
    contact_id integer not null references contacts (contact_id),
    verified_by integer references users (user_id),
    verified_by_label text not null,
    verified_at integer not null,
    phone_called text not null,
    phone_source text not null,
    note text not null,
    expires_at integer not null,
    withdrawn_at integer
);
create index contact_verifications_contact on contact_verifications (contact_id, verified_at);

create table allowed_domains (
    pattern text primary key,
    added_by text not null,
    added_at integer not null
);

create table policy_settings (
    name text primary key,
    value text not null,
    updated_by text not null,
    updated_at integer not null
);

create table transfers (
    transfer_id integer primary key,
    sender_id integer not null references users (user_id),
    contact_id integer not null references contacts (contact_id),
    recipient_email text not null,
    details_sealed blob not null,
    classification text not null,
    state text not null,
    unverified_attested integer not null default 0,
    created_at integer not null,
    released_at integer,
    expires_at integer not null,
    download_limit integer not null,
    downloads integer not null default 0,
    wrong_passphrases integer not null default 0,
    link_hash text unique,
    age_header blob,
    blob_key text not null unique,
    body_size integer not null,
    plaintext_size integer not null,
    file_count integer not null,
    sealed_on_server integer not null,
    code_requested_at integer,
    opened_at integer,
    unlocked_at integer,
    first_download_at integer,
    last_download_at integer,
    ended_at integer,
    ended_reason text,
    shredded_at integer,
    blob_deleted_at integer,
    sweep_lease_until integer not null default 0
);
create index transfers_sender on transfers (sender_id, created_at);
create index transfers_state on transfers (state, expires_at);

create table transfer_files (
    transfer_id integer not null references transfers (transfer_id),
    position integer not null,
    name_sealed blob not null,
    size integer not null,
    data_offset integer not null,
    primary key (transfer_id, position)
);

create table recipient_codes (
    code_id integer primary key,
    transfer_id integer not null references transfers (transfer_id),
    code_hash text not null,
    created_at integer not null,
    expires_at integer not null,
    attempts integer not null default 0,
    used_at integer
);
create index recipient_codes_transfer on recipient_codes (transfer_id, created_at);

create table recipient_sessions (
    session_hash text primary key,
    transfer_id integer not null references transfers (transfer_id),
    created_at integer not null,
    expires_at integer not null,
    file_key_sealed blob,
    address text not null
);
create index recipient_sessions_transfer on recipient_sessions (transfer_id);

create table transfer_downloads (
    download_id integer primary key,
    transfer_id integer not null references transfers (transfer_id),
    item text not null,
    address text not null,
    started_at integer not null,
    completed_at integer,
    failed_at integer
);
create index transfer_downloads_transfer on transfer_downloads (transfer_id, started_at);
