-- Detection engine: a fingerprint of each decided message's normalised text, and an index to
-- count a user's recent messages (flood and repeat signals, shared by every worker).
ALTER TABLE decisions ADD COLUMN fingerprint BIGINT;
DROP INDEX IF EXISTS decisions_user;
CREATE INDEX IF NOT EXISTS decisions_user_received ON decisions (user_id, received_at);
