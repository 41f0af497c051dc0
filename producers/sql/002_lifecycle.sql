-- The lifecycle write model: the one place where rollout decisions are taken (namespace "commands").
-- A decision locks its rollout's row, decides (producers/decider.py), updates these rows and appends the
-- decision's events to the outbox, all in one transaction; the relay publishes the outbox to Kafka afterwards.

CREATE TABLE IF NOT EXISTS lifecycle_rollouts (
    rollout_id            text        PRIMARY KEY,
    status                text        NOT NULL,
    seq                   integer     NOT NULL DEFAULT 0,
    priority              integer     NOT NULL DEFAULT 0,
    -- enqueue order: FIFO within a priority (a requeued rollout keeps its place)
    queue_order           bigserial,
    required_capabilities text[]      NOT NULL DEFAULT '{}',
    config                jsonb       NOT NULL,
    -- what a claim hands the runner
    input                 jsonb,
    mode                  text,
    resources_id          text,
    metadata              jsonb       NOT NULL DEFAULT '{}',
    attempt_count         integer     NOT NULL DEFAULT 0,
    latest_attempt_id     text,
    enqueued_at           timestamptz NOT NULL DEFAULT now(),
    ended_at              timestamptz
);
CREATE INDEX IF NOT EXISTS lifecycle_queue ON lifecycle_rollouts (priority DESC, queue_order)
    WHERE status IN ('queuing', 'requeuing');

CREATE TABLE IF NOT EXISTS lifecycle_attempts (
    attempt_id      text        PRIMARY KEY,
    rollout_id      text        NOT NULL,
    sequence_id     integer     NOT NULL,
    worker_id       text        NOT NULL,
    status          text        NOT NULL,
    claimed_at      timestamptz NOT NULL,
    last_seen       timestamptz NOT NULL,
    ended_at        timestamptz,
    late_reports    integer     NOT NULL DEFAULT 0,
    -- deadlines the watchdog checks, from the rollout's config (NULL = none)
    timeout_at      timestamptz,
    unresponsive_at timestamptz,
    UNIQUE (rollout_id, sequence_id)
);
CREATE INDEX IF NOT EXISTS lifecycle_attempts_timeout ON lifecycle_attempts (timeout_at) WHERE ended_at IS NULL;
CREATE INDEX IF NOT EXISTS lifecycle_attempts_unresponsive ON lifecycle_attempts (unresponsive_at)
    WHERE ended_at IS NULL;
CREATE INDEX IF NOT EXISTS lifecycle_attempts_worker ON lifecycle_attempts (worker_id) WHERE ended_at IS NULL;

-- Records to publish, in the order they were decided. Stored encoded (topic with its prefix, key, value,
-- headers), so the relay publishes exactly what the deciding transaction committed.
CREATE TABLE IF NOT EXISTS outbox (
    id            bigserial   PRIMARY KEY,
    topic         text        NOT NULL,
    key           bytea,
    value         bytea       NOT NULL,
    -- JSON [[name, value as latin-1 text], ...]: any header bytes round-trip, and the JSON escapes NUL
    headers       text        NOT NULL,
    published     boolean     NOT NULL DEFAULT false,
    "partition"   integer,
    "offset"      bigint,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE NOT published;

-- An enqueued rollout's event goes through the outbox too: remember which row, to answer with its position.
ALTER TABLE command_rollouts ADD COLUMN IF NOT EXISTS outbox_id bigint;

-- Idempotency-Key of every other command (rewards, spans, resources, documents): a retry answers what the first
-- request was answered (its outbox rows, so the same event ids and positions) and publishes nothing new.
CREATE TABLE IF NOT EXISTS command_requests (
    route           text        NOT NULL,
    idempotency_key text        NOT NULL,
    request_hash    text        NOT NULL,
    outbox_ids      bigint[]    NOT NULL,
    answer          jsonb       NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (route, idempotency_key)
);
