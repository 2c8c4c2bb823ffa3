-- Incidents (policy P11): "report a problem" on a transfer opens one. reported_at is when the
-- problem became known: the 72-hour ICO clock runs from it. The description and the assessment
-- may name a pupil, so they are sealed under the server key (contexts `incident-description:`
-- and `incident-assessment:` followed by incident_id). Times are unix seconds; flags are 0/1.

create table incidents (
    incident_id integer primary key,
    transfer_id integer not null references transfers (transfer_id),
    reported_by integer not null references users (user_id),
    reported_at integer not null,
    kind text not null,
    description_sealed blob,
    recalled integer not null default 0,
    state text not null default 'open',
    assessment_sealed blob,
    reportable integer,
    assessed_by integer references users (user_id),
    assessed_at integer,
    closed_by integer references users (user_id),
    closed_at integer
);
create index incidents_state on incidents (state, reported_at);
create index incidents_transfer on incidents (transfer_id);

-- The evidence of access on an incident page is read from the audit log by recipient.
create index audit_log_subject on audit_log (subject, action);
