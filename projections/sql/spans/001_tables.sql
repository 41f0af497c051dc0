-- The spans read model. Runs inside the generation schema (unqualified names).
-- One row per (rollout_id, attempt_id, span_id): the first copy on the log wins, later copies change nothing.
CREATE TABLE spans (
    rollout_id         text        NOT NULL,
    attempt_id         text        NOT NULL,
    span_id            text        NOT NULL,
    sequence_id        bigint      NOT NULL,
    trace_id           text        NOT NULL,
    parent_id          text,
    name               text        NOT NULL,
    kind               text        NOT NULL,
    start_time         timestamptz NOT NULL,
    end_time           timestamptz,
    status_code        text        NOT NULL,
    status_description text,
    attributes         jsonb       NOT NULL,
    events             jsonb       NOT NULL,
    links              jsonb       NOT NULL,
    resource           jsonb       NOT NULL,
    -- the event whose copy was kept
    event_id           uuid        NOT NULL,
    PRIMARY KEY (rollout_id, attempt_id, span_id)
);
-- The routes' order within an attempt: a page is one range scan of this index (keyset pagination).
CREATE INDEX spans_order ON spans (rollout_id, attempt_id, sequence_id, start_time, span_id);

-- One row per attempt that has spans: what orders a rollout's attempts without reading its spans, and how many
-- spans each holds (maintained from the rows actually inserted, so copies do not count).
CREATE TABLE span_attempts (
    rollout_id        text        NOT NULL,
    attempt_id        text        NOT NULL,
    first_sequence_id bigint      NOT NULL,
    first_start_time  timestamptz NOT NULL,
    span_count        bigint      NOT NULL,
    PRIMARY KEY (rollout_id, attempt_id)
);
CREATE INDEX span_attempts_order ON span_attempts (rollout_id, first_sequence_id, first_start_time, attempt_id);
