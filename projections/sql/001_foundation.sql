-- The foundation: pgvector, facts about the stack, and where each projection stands in each partition.
CREATE EXTENSION IF NOT EXISTS vector;

-- Small facts the stack must remember across restarts, such as the broker log epoch it has consumed.
-- Now owned by the stack's own namespace (agl/stack/sql/001_stack_state.sql, same definition): kept here
-- unchanged because a published migration is never edited; later changes go there, not here.
CREATE TABLE IF NOT EXISTS stack_state (
    key        text        PRIMARY KEY,
    value      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The true consumer positions: written in the same transaction as the read-model rows they produced,
-- so a crash can never apply an event twice or lose one. next_offset is the first offset not yet applied.
CREATE TABLE IF NOT EXISTS projection_offsets (
    projection  text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition)
);
