-- When the school found out about the problem, which may be before anyone reported it in
-- Safehand: the 72-hour ICO clock (UK GDPR Article 33) runs from known_at, not reported_at.
-- Incidents opened before this column existed were known when they were reported.

alter table incidents add column known_at integer not null default 0;
update incidents set known_at = reported_at;
