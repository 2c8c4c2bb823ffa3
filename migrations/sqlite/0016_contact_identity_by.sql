-- Four eyes on contacts: who last set a contact's address and phone number. That person may
-- not also record its verification (unless policy allows self-verification). Existing
-- contacts: the person who added them.
alter table contacts add column identity_set_by integer references users (user_id);
update contacts set identity_set_by = created_by;
