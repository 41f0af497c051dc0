-- The command API's memory, which must survive a restart of the API (namespace "commands").

-- Every rollout the API enqueued. The event is stored before it is published, so a retry after a crash
-- publishes the very same event (same event_id, same rollout_id) instead of a twin; the position is filled in
-- once the broker has confirmed it. request_hash tells a true retry from a different request reusing the id.
CREATE TABLE IF NOT EXISTS command_rollouts (
    rollout_id   text        PRIMARY KEY,
    request_hash text        NOT NULL,
    event        text        NOT NULL,
    topic        text,
    "partition"  integer,
    "offset"     bigint,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Idempotency-Key header -> the rollout ids its request was given, so a retry reuses them.
CREATE TABLE IF NOT EXISTS command_idempotency_keys (
    idempotency_key text        PRIMARY KEY,
    request_hash    text        NOT NULL,
    rollout_ids     text[]      NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Numbers the server hands out: resources versions, document versions, span sequence ids per rollout.
CREATE TABLE IF NOT EXISTS command_counters (
    kind text   NOT NULL,
    id   text   NOT NULL,
    last bigint NOT NULL,
    PRIMARY KEY (kind, id)
);
