-- Approval (policy P7): a transfer whose release policy holds for a second pair of eyes is
-- 'held' from held_at until an approver decides. approval_reasons lists the policy rules that
-- held it (JSON array of rule names). The decision (approved or rejected) records who, when and
-- why; the reason is sealed under the server key (it may name a pupil). A rejected transfer is
-- crypto-shredded like a recalled one; a held one nobody decides expires at expires_at.

alter table transfers add column held_at bigint;
alter table transfers add column approval_reasons text;
alter table transfers add column decision text;
alter table transfers add column decided_by bigint references users (user_id);
alter table transfers add column decided_by_label text;
alter table transfers add column decided_at bigint;
alter table transfers add column decision_reason_sealed bytea;
