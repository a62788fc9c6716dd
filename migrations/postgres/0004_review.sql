-- Review queue: API tokens for moderators, one review item per flagged message, and the audit log.
CREATE TABLE IF NOT EXISTS api_tokens (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE,
    role         TEXT    NOT NULL CHECK (role IN ('viewer', 'moderator', 'admin')),
    -- hex SHA-256 of the secret; the secret itself is shown once and never stored
    token_hash   TEXT    NOT NULL UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS review_items (
    id                BIGSERIAL PRIMARY KEY,
    message_id        TEXT    NOT NULL,
    -- the latest decision on the message, and the one that opened the item
    decision_id       BIGINT  NOT NULL REFERENCES decisions (id),
    first_decision_id BIGINT  NOT NULL REFERENCES decisions (id),
    -- open | claimed | resolved
    status            TEXT    NOT NULL CHECK (status IN ('open', 'claimed', 'resolved')),
    -- the highest-scoring category
    category          TEXT    NOT NULL,
    decision          TEXT    NOT NULL,
    toxicity          DOUBLE PRECISION NOT NULL,
    spam              DOUBLE PRECISION NOT NULL,
    explicit          DOUBLE PRECISION NOT NULL,
    -- max(toxicity, spam, explicit), kept for the min-score filter and the score sort
    score             DOUBLE PRECISION NOT NULL,
    text              TEXT    NOT NULL,
    cid               TEXT,
    user_id           TEXT,
    reasons           TEXT    NOT NULL,
    rule_ids          TEXT    NOT NULL,
    action_status     TEXT    NOT NULL,
    flags             BIGINT  NOT NULL DEFAULT 1,
    claimed_by        TEXT,
    claim_expires_at  TIMESTAMPTZ,
    resolved_by       TEXT,
    -- approve | remove | ban | dismiss
    resolution        TEXT CHECK (resolution IN ('approve', 'remove', 'ban', 'dismiss')),
    note              TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    resolved_at       TIMESTAMPTZ
);
CREATE UNIQUE INDEX IF NOT EXISTS review_items_one_open ON review_items (message_id) WHERE status <> 'resolved';
CREATE INDEX IF NOT EXISTS review_items_created ON review_items (created_at, id);
CREATE INDEX IF NOT EXISTS review_items_score ON review_items (score, id);
CREATE INDEX IF NOT EXISTS review_items_status ON review_items (status, created_at, id);
CREATE INDEX IF NOT EXISTS review_items_category ON review_items (category, created_at, id);
CREATE INDEX IF NOT EXISTS review_items_user ON review_items (user_id, created_at, id);
CREATE INDEX IF NOT EXISTS review_items_cid ON review_items (cid, created_at, id);
CREATE INDEX IF NOT EXISTS review_items_resolved ON review_items (resolved_at) WHERE status = 'resolved';

CREATE TABLE IF NOT EXISTS audit_log (
    id      BIGSERIAL PRIMARY KEY,
    -- token name, or cli / system
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    before  TEXT,
    after   TEXT,
    at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);
