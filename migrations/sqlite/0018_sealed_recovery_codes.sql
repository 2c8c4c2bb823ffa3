-- Recovery codes are sealed under the server key (AES-256-GCM, context `recovery-code:USER`)
-- instead of hashed under a key derived from it, so a server-key rotation can seal them again
-- and the retired key opens none of them. Codes made before this table existed stay in
-- recovery_codes (keyed hashes) and keep working until the next rotation, which retires them
-- and names the people who need new ones.
create table sealed_recovery_codes (
    code_id integer primary key,
    user_id integer not null references users (user_id) on delete cascade,
    code_sealed blob not null,
    used_at integer
);
create index sealed_recovery_codes_user on sealed_recovery_codes (user_id);
