-- Downloads hold their slot by a short claim, renewed while bytes flow, so a crashed server
-- frees it within a minute. A download stopped because the transfer was recalled, expired or
-- locked while it ran says why (the incident record shows "cut off by the recall").
alter table transfer_downloads add column claimed_until integer;
alter table transfer_downloads add column cut_off_reason text;
update transfer_downloads set claimed_until = started_at + 21600
    where completed_at is null and failed_at is null;
create index transfer_downloads_claims on transfer_downloads (transfer_id, claimed_until);
