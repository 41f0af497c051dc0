-- The rollouts read model. Runs inside the generation schema (unqualified names).
CREATE TABLE rollouts (
    rollout_id        text        PRIMARY KEY,
    status            text        NOT NULL,
    enqueued          boolean     NOT NULL,
    input             jsonb,
    mode              text,
    resources_id      text,
    config            jsonb,
    metadata          jsonb,
    priority          integer     NOT NULL,
    enqueued_at       timestamptz,
    cancelled_at      timestamptz,
    requeued_after    text,
    start_time        timestamptz,
    end_time          timestamptz,
    attempt_count     integer     NOT NULL,
    latest_attempt_id text
);
CREATE INDEX rollouts_status ON rollouts (status, enqueued_at, rollout_id);
CREATE INDEX rollouts_mode ON rollouts (mode, enqueued_at, rollout_id);

CREATE TABLE attempts (
    attempt_id          text        PRIMARY KEY,
    rollout_id          text        NOT NULL,
    sequence_id         integer,
    worker_id           text,
    status              text        NOT NULL,
    start_time          timestamptz,
    end_time            timestamptz,
    last_heartbeat_time timestamptz,
    error               jsonb,
    metadata            jsonb
);
CREATE INDEX attempts_rollout ON attempts (rollout_id, sequence_id);
