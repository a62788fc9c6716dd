-- Enforcement that cannot be lost: actions as durable work written with the decision (an outbox),
-- one app per event, replay identity, and what shadow and dry-run decisions would have done.

-- The content identity of an event (type + message id + the message's updated_at, or the event's
-- created_at), so a captured delivery replayed under a new X-Webhook-Id is recognised.
ALTER TABLE events ADD COLUMN content_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS events_content_key ON events (content_key);
CREATE INDEX IF NOT EXISTS events_status_updated ON events (status, updated_at);

-- The app (API key) whose webhook the decision answers; strikes, bans and review items are per app.
ALTER TABLE decisions ADD COLUMN app TEXT NOT NULL DEFAULT '';
ALTER TABLE decisions ADD COLUMN shadow BOOLEAN NOT NULL DEFAULT FALSE;
-- JSON: the strike, ban and Stream calls a shadow, exempt or dry-run decision would have made.
ALTER TABLE decisions ADD COLUMN would_do TEXT;
DROP INDEX IF EXISTS decisions_user_received;
CREATE INDEX IF NOT EXISTS decisions_app_user_received ON decisions (app, user_id, received_at);
CREATE INDEX IF NOT EXISTS decisions_received ON decisions (received_at);

ALTER TABLE strikes ADD COLUMN app TEXT NOT NULL DEFAULT '';
DROP INDEX IF EXISTS strikes_user;
CREATE INDEX IF NOT EXISTS strikes_app_user ON strikes (app, user_id, expires_at);
ALTER TABLE bans ADD COLUMN app TEXT NOT NULL DEFAULT '';
DROP INDEX IF EXISTS bans_user;
CREATE INDEX IF NOT EXISTS bans_app_user ON bans (app, user_id);

-- Review items gain the app and the `resolving` status (a resolution waiting for Stream). SQLite
-- cannot change a CHECK constraint, so the table is rebuilt.
CREATE TABLE review_items_new (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    app               TEXT    NOT NULL DEFAULT '',
    message_id        TEXT    NOT NULL,
    decision_id       INTEGER NOT NULL REFERENCES decisions (id),
    first_decision_id INTEGER NOT NULL REFERENCES decisions (id),
    status            TEXT    NOT NULL CHECK (status IN ('open', 'claimed', 'resolving', 'resolved')),
    category          TEXT    NOT NULL,
    decision          TEXT    NOT NULL,
    toxicity          REAL    NOT NULL,
    spam              REAL    NOT NULL,
    explicit          REAL    NOT NULL,
    score             REAL    NOT NULL,
    text              TEXT    NOT NULL,
    cid               TEXT,
    user_id           TEXT,
    reasons           TEXT    NOT NULL,
    rule_ids          TEXT    NOT NULL,
    action_status     TEXT    NOT NULL,
    flags             INTEGER NOT NULL DEFAULT 1,
    claimed_by        TEXT,
    claim_expires_at  TEXT,
    resolved_by       TEXT,
    resolution        TEXT CHECK (resolution IN ('approve', 'remove', 'ban', 'dismiss')),
    note              TEXT,
    created_at        TEXT    NOT NULL,
    updated_at        TEXT    NOT NULL,
    resolved_at       TEXT
);
INSERT INTO review_items_new (id, message_id, decision_id, first_decision_id, status, category, decision,
    toxicity, spam, explicit, score, text, cid, user_id, reasons, rule_ids, action_status, flags, claimed_by,
    claim_expires_at, resolved_by, resolution, note, created_at, updated_at, resolved_at)
SELECT id, message_id, decision_id, first_decision_id, status, category, decision,
    toxicity, spam, explicit, score, text, cid, user_id, reasons, rule_ids, action_status, flags, claimed_by,
    claim_expires_at, resolved_by, resolution, note, created_at, updated_at, resolved_at
FROM review_items;
DROP TABLE review_items;
ALTER TABLE review_items_new RENAME TO review_items;
CREATE UNIQUE INDEX IF NOT EXISTS review_items_one_open ON review_items (app, message_id) WHERE status <> 'resolved';
CREATE INDEX IF NOT EXISTS review_items_created ON review_items (created_at, id);
CREATE INDEX IF NOT EXISTS review_items_score ON review_items (score, id);
CREATE INDEX IF NOT EXISTS review_items_status ON review_items (status, created_at, id);
CREATE INDEX IF NOT EXISTS review_items_category ON review_items (category, created_at, id);
CREATE INDEX IF NOT EXISTS review_items_user ON review_items (user_id, created_at, id);
CREATE INDEX IF NOT EXISTS review_items_cid ON review_items (cid, created_at, id);
CREATE INDEX IF NOT EXISTS review_items_resolved ON review_items (resolved_at) WHERE status = 'resolved';
CREATE INDEX IF NOT EXISTS review_items_decision ON review_items (decision_id);

-- Durable work: the Stream calls a decision or a moderator's resolution implies, written in the
-- same transaction, then carried out with retries until done or failed for good.
CREATE TABLE IF NOT EXISTS actions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    app            TEXT    NOT NULL,
    -- decision | resolution | unban
    origin         TEXT    NOT NULL,
    decision_id    INTEGER REFERENCES decisions (id),
    review_item_id INTEGER REFERENCES review_items (id),
    -- JSON: the steps in order, with everything each call needs
    steps          TEXT    NOT NULL,
    -- steps already carried out (a restart resumes after them)
    done_steps     INTEGER NOT NULL DEFAULT 0,
    -- JSON: the outcome of each step carried out so far
    results        TEXT    NOT NULL DEFAULT '[]',
    status         TEXT    NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    next_at        TEXT    NOT NULL,
    -- a runner holds it until then; a runner that died lets it go by itself
    lease_until    TEXT,
    lease_by       TEXT,
    last_error     TEXT,
    -- JSON: what the origin needs when the work finishes (e.g. the review item as it was)
    context        TEXT,
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL,
    finished_at    TEXT
);
CREATE INDEX IF NOT EXISTS actions_due ON actions (status, next_at);
CREATE INDEX IF NOT EXISTS actions_decision ON actions (decision_id);
CREATE INDEX IF NOT EXISTS actions_finished ON actions (finished_at);
CREATE INDEX IF NOT EXISTS job_attempts_started ON job_attempts (started_at);
