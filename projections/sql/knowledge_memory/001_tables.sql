-- The memories read model: each agent memory with its recorded vector, and the rewards of the rollouts that
-- wrote them. Consolidation (merging near-duplicates, decay) is computed from these rows when read.
CREATE TABLE memory_items (
    collection   text        NOT NULL,   -- memory.<agent_id>.<scope>
    memory_id    text        NOT NULL,
    version      bigint      NOT NULL,
    text         text        NOT NULL,
    kind         text        NOT NULL,
    rollout_id   text,
    metadata     jsonb       NOT NULL,
    occurred_at  timestamptz NOT NULL,   -- when the memory was written (its document_upserted)
    vector       bytea,                  -- float32, little-endian, as recorded by the indexer (null: not yet)
    PRIMARY KEY (collection, memory_id)
);
-- Versions up to ``through`` were deleted: they never come back (a later version may).
CREATE TABLE memory_deleted (
    collection text   NOT NULL,
    memory_id  text   NOT NULL,
    through    bigint NOT NULL,
    PRIMARY KEY (collection, memory_id)
);
CREATE TABLE memory_rewards (
    rollout_id   text             PRIMARY KEY,
    reward_sum   double precision NOT NULL,
    reward_count integer          NOT NULL
);
