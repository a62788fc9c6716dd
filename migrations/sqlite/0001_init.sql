-- chatguard's own tables (the job queue's tables belong to apalis and are migrated by it).
CREATE TABLE IF NOT EXISTS events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id    TEXT    NOT NULL UNIQUE,
    api_key       TEXT    NOT NULL,
    event_type    TEXT    NOT NULL,
    -- received → queued → decided | processed | retrying → dead;  or ignored | own
    status        TEXT    NOT NULL,
    deliveries    INTEGER NOT NULL DEFAULT 1,
    message_id    TEXT,
    cid           TEXT,
    user_id       TEXT,
    payload       TEXT    NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    received_at   TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS events_status ON events (status);

CREATE TABLE IF NOT EXISTS decisions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       INTEGER NOT NULL UNIQUE REFERENCES events (id),
    webhook_id     TEXT    NOT NULL,
    event_type     TEXT    NOT NULL,
    message_id     TEXT,
    cid            TEXT,
    user_id        TEXT,
    text           TEXT    NOT NULL,
    toxicity       REAL    NOT NULL,
    spam           REAL    NOT NULL,
    explicit       REAL    NOT NULL,
    matched_rules  TEXT    NOT NULL,
    reasons        TEXT    NOT NULL,
    decision       TEXT    NOT NULL,
    policy_version TEXT    NOT NULL,
    action         TEXT    NOT NULL,
    action_status  TEXT    NOT NULL,
    dry_run        BOOLEAN NOT NULL,
    worker         TEXT    NOT NULL,
    received_at    TEXT    NOT NULL,
    decided_at     TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_decided_at ON decisions (decided_at);
CREATE INDEX IF NOT EXISTS decisions_user ON decisions (user_id);

CREATE TABLE IF NOT EXISTS job_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    INTEGER NOT NULL REFERENCES events (id),
    attempt     INTEGER NOT NULL,
    worker      TEXT    NOT NULL,
    started_at  TEXT    NOT NULL,
    error       TEXT
);
CREATE INDEX IF NOT EXISTS job_attempts_event ON job_attempts (event_id);

CREATE TABLE IF NOT EXISTS dead_letters (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     INTEGER NOT NULL UNIQUE REFERENCES events (id),
    webhook_id   TEXT    NOT NULL,
    attempts     INTEGER NOT NULL,
    last_error   TEXT    NOT NULL,
    failed_at    TEXT    NOT NULL,
    retried_at   TEXT,
    retry_count  INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
