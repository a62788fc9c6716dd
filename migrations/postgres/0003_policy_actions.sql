-- Policy and actions: strikes and bans per user, and what each decision did on Stream.
CREATE TABLE IF NOT EXISTS strikes (
    id          BIGSERIAL PRIMARY KEY,
    user_id     TEXT        NOT NULL,
    decision_id BIGINT      NOT NULL UNIQUE REFERENCES decisions (id),
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    cleared_at  TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS strikes_user ON strikes (user_id, expires_at);

CREATE TABLE IF NOT EXISTS bans (
    id          BIGSERIAL PRIMARY KEY,
    user_id     TEXT        NOT NULL,
    -- chatguard (our escalation) or stream (a user.banned event from a moderator or another tool)
    source      TEXT        NOT NULL,
    decision_id BIGINT      UNIQUE REFERENCES decisions (id),
    reason      TEXT,
    started_at  TIMESTAMPTZ NOT NULL,
    -- NULL: permanent
    until       TIMESTAMPTZ,
    lifted_at   TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS bans_user ON bans (user_id);

ALTER TABLE decisions ADD COLUMN action_result TEXT;
ALTER TABLE decisions ADD COLUMN alert_status TEXT;
