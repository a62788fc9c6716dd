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

-- Review items gain the app and the `resolving` status (a resolution waiting for Stream).
ALTER TABLE review_items ADD COLUMN app TEXT NOT NULL DEFAULT '';
ALTER TABLE review_items DROP CONSTRAINT IF EXISTS review_items_status_check;
ALTER TABLE review_items ADD CONSTRAINT review_items_status_check
    CHECK (status IN ('open', 'claimed', 'resolving', 'resolved'));
DROP INDEX IF EXISTS review_items_one_open;
CREATE UNIQUE INDEX IF NOT EXISTS review_items_one_open ON review_items (app, message_id) WHERE status <> 'resolved';
CREATE INDEX IF NOT EXISTS review_items_decision ON review_items (decision_id);

-- Durable work: the Stream calls a decision or a moderator's resolution implies, written in the
-- same transaction, then carried out with retries until done or failed for good.
CREATE TABLE IF NOT EXISTS actions (
    id             BIGSERIAL PRIMARY KEY,
    app            TEXT        NOT NULL,
    -- decision | resolution | unban
    origin         TEXT        NOT NULL,
    decision_id    BIGINT      REFERENCES decisions (id),
    review_item_id BIGINT      REFERENCES review_items (id),
    -- JSON: the steps in order, with everything each call needs
    steps          TEXT        NOT NULL,
    -- steps already carried out (a restart resumes after them)
    done_steps     BIGINT      NOT NULL DEFAULT 0,
    -- JSON: the outcome of each step carried out so far
    results        TEXT        NOT NULL DEFAULT '[]',
    status         TEXT        NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
    attempts       BIGINT      NOT NULL DEFAULT 0,
    next_at        TIMESTAMPTZ NOT NULL,
    -- a runner holds it until then; a runner that died lets it go by itself
    lease_until    TIMESTAMPTZ,
    lease_by       TEXT,
    last_error     TEXT,
    -- JSON: what the origin needs when the work finishes (e.g. the review item as it was)
    context        TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    finished_at    TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS actions_due ON actions (status, next_at);
CREATE INDEX IF NOT EXISTS actions_decision ON actions (decision_id);
CREATE INDEX IF NOT EXISTS actions_finished ON actions (finished_at);
CREATE INDEX IF NOT EXISTS job_attempts_started ON job_attempts (started_at);
