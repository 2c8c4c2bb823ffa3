-- The undo window: after a release the recipient's link mail waits in the outbox until
-- undo_until (policy undo_window_secs), and the sender can take the release back until then.
-- release_mail_id is that mail (cancelled in the outbox on undo or recall, state 'cancelled').
-- Both are null for a transfer released with no window, and again after an undo.

alter table transfers add column undo_until integer;
alter table transfers add column release_mail_id integer;
