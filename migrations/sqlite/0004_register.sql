-- The equipment and disposal register: technicians' certificate signing keys, assets and their
-- storage media, uploaded wipe certificates, recorded physical destructions (with the
-- contractor's certificate file), and disposal records with the evidence frozen at completion.
-- Dates a person types (purchase, disposal, PAT check, destruction) are `YYYY-MM-DD` text;
-- event times are unix seconds.

create table signing_keys (
    key_id integer primary key,
    user_id integer not null references users (user_id) on delete cascade,
    public_key text not null unique,
    label text not null,
    created_at integer not null,
    revoked_at integer
);
create index signing_keys_user on signing_keys (user_id);

create table assets (
    asset_id integer primary key,
    tag text not null,
    tag_key text not null unique,
    kind text not null,
    make text not null,
    model text not null,
    serial text not null,
    location text not null,
    assigned_to text not null,
    purchase_date text,
    personal_data integer not null,
    status text not null,
    notes text not null,
    created_at integer not null,
    updated_at integer not null
);

create table storage_media (
    medium_id integer primary key,
    asset_id integer not null references assets (asset_id),
    serial text not null,
    serial_key text not null unique,
    description text not null,
    position integer not null
);
create index storage_media_asset on storage_media (asset_id);

create table wipe_certificates (
    cert_row_id integer primary key,
    certificate_id text not null unique,
    document blob not null,
    sha256 text not null,
    signer_key text not null,
    key_id integer references signing_keys (key_id),
    result text not null,
    device_serial text not null,
    device_model text not null,
    device_path text not null,
    asset_tag text not null,
    operator text not null,
    method text not null,
    nist_category text not null,
    wiped_at text not null,
    medium_id integer references storage_media (medium_id),
    uploaded_by integer not null references users (user_id),
    uploaded_at integer not null,
    assigned_by integer references users (user_id),
    assigned_at integer
);
create index wipe_certificates_medium on wipe_certificates (medium_id);

create table destructions (
    destruction_id integer primary key,
    medium_id integer not null references storage_media (medium_id),
    contractor text not null,
    reference text not null,
    destroyed_on text not null,
    file_name text not null,
    content_type text not null,
    file blob not null,
    file_sha256 text not null,
    file_size integer not null,
    recorded_by integer not null references users (user_id),
    recorded_at integer not null
);
create index destructions_medium on destructions (medium_id);

create table disposals (
    disposal_id integer primary key,
    asset_id integer not null references assets (asset_id),
    corrects_id integer references disposals (disposal_id),
    correction_reason text not null,
    state text not null,
    disposal_date text,
    disposed_by integer not null references users (user_id),
    method text not null,
    receiver_name text not null,
    receiver_kind text not null,
    receiver_registration text not null,
    licence_checked integer not null,
    licence_notes text not null,
    pat_date text,
    notes text not null,
    authorised_by integer references users (user_id),
    authorised_at integer,
    completed_by integer references users (user_id),
    completed_at integer,
    created_by integer not null references users (user_id),
    created_at integer not null,
    updated_at integer not null
);
create index disposals_asset on disposals (asset_id);
create unique index disposals_one_correction on disposals (corrects_id) where corrects_id is not null;

create table disposal_evidence (
    disposal_id integer not null references disposals (disposal_id),
    medium_id integer not null references storage_media (medium_id),
    cert_row_id integer references wipe_certificates (cert_row_id),
    destruction_id integer references destructions (destruction_id),
    primary key (disposal_id, medium_id)
);

-- A completed disposal record is read-only; corrections are new records.
create trigger disposals_completed_read_only before update on disposals
when old.state = 'completed'
begin
    select raise(abort, 'a completed disposal record is read-only');
end;
create trigger disposals_completed_kept before delete on disposals
when old.state = 'completed'
begin
    select raise(abort, 'a completed disposal record is read-only');
end;
create trigger disposal_evidence_kept before delete on disposal_evidence
begin
    select raise(abort, 'the evidence of a completed disposal is read-only');
end;
create trigger disposal_evidence_fixed before update on disposal_evidence
begin
    select raise(abort, 'the evidence of a completed disposal is read-only');
end;
