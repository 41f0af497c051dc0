-- The triplet read model. Runs inside the generation schema (unqualified names).
--
-- The projection keeps its own copy of the facts it recomputes from (spans, rewards, each rollout's mode and
-- resources), so a late span or reward recomputes an attempt's triplets without reading another read model.

-- Every span once per (rollout, attempt, span id): the first copy in log order wins. The body is the event as
-- UTF-8 JSON in bytea: written and read back as bytes, never parsed by PostgreSQL (convert_from(body, 'UTF8')::json
-- shows it). Stored uncompressed (EXTERNAL): on two cores pglz costs a rebuild more than the disk it saves.
CREATE TABLE triplet_spans (
    rollout_id  text   NOT NULL,
    attempt_id  text   NOT NULL,
    span_id     text   NOT NULL,
    sequence_id bigint NOT NULL,
    body        bytea  STORAGE EXTERNAL NOT NULL,
    PRIMARY KEY (rollout_id, attempt_id, span_id)
);

-- Every reward event once (by event id); log_offset is its place in the rollout's partition: "event order".
CREATE TABLE triplet_rewards (
    event_id   uuid   PRIMARY KEY,
    rollout_id text   NOT NULL,
    attempt_id text,
    log_offset bigint NOT NULL,
    body       bytea  NOT NULL
);
CREATE INDEX triplet_rewards_rollout ON triplet_rewards (rollout_id, log_offset);

-- From the rollouts topic: what the triplet routes filter on. The first enqueue of an id wins.
CREATE TABLE triplet_rollouts (
    rollout_id   text PRIMARY KEY,
    mode         text,
    resources_id text
);

-- The adapter configuration this projection was built with (one row, written by a generated migration).
CREATE TABLE triplet_config (
    projection text  PRIMARY KEY,
    config     jsonb NOT NULL
);

-- The triplets: (rollout, attempt, idx) is the identity, idx the call's 0-based order within the attempt.
CREATE TABLE triplets (
    rollout_id         text             NOT NULL,
    attempt_id         text             NOT NULL,
    idx                integer          NOT NULL,
    span_id            text             NOT NULL,
    response_id        text,
    agent_name         text,
    model              text,
    mode               text,
    resources_id       text,
    start_time         timestamptz      NOT NULL,
    end_time           timestamptz,
    reward             double precision,
    reward_source      text,
    reward_error       text,
    reward_dimensions  jsonb            NOT NULL,
    prompt_token_ids   integer[]        NOT NULL,
    response_token_ids integer[]        NOT NULL,
    logprobs           jsonb,
    prompt             jsonb,
    response           jsonb,
    request            jsonb            NOT NULL,
    response_meta      jsonb            NOT NULL,
    image_urls         jsonb            NOT NULL,
    PRIMARY KEY (rollout_id, attempt_id, idx)
);
-- The routes page by (start_time, rollout_id, attempt_id, idx): keyset pagination walks this index.
CREATE INDEX triplets_order ON triplets (start_time, rollout_id, attempt_id, idx);
CREATE INDEX triplets_resources ON triplets (resources_id, start_time, rollout_id, attempt_id, idx);
