-- Policy and actions: strikes and bans per user, and what each decision did on Stream.
CREATE TABLE IF NOT EXISTS strikes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     TEXT    NOT NULL,
    decision_id INTEGER NOT NULL UNIQUE REFERENCES decisions (id),
    created_at  TEXT    NOT NULL,
    expires_at  TEXT    NOT NULL,
    cleared_at  TEXT
);
CREATE INDEX IF NOT EXISTS strikes_user ON strikes (user_id, expires_at);

CREATE TABLE IF NOT EXISTS bans (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     TEXT    NOT NULL,
    -- chatguard (our escalation) or stream (a user.banned event from a moderator or another tool)
    source      TEXT    NOT NULL,
    decision_id INTEGER UNIQUE REFERENCES decisions (id),
    reason      TEXT,
    started_at  TEXT    NOT NULL,
    -- NULL: permanent
    until       TEXT,
    lifted_at   TEXT
);
CREATE INDEX IF NOT EXISTS bans_user ON bans (user_id);

ALTER TABLE decisions ADD COLUMN action_result TEXT;
ALTER TABLE decisions ADD COLUMN alert_status TEXT;
