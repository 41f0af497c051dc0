-- The resources published last, as the write side decided it: a rollout enqueued without resources_id is pinned
-- to it in its rollout.enqueued event (Agent Lightning's rule: none means the latest at enqueue time), so what a
-- rollout runs with never depends on how far the resources read model has caught up. One row.
CREATE TABLE IF NOT EXISTS command_latest_resources (
    one               boolean     PRIMARY KEY DEFAULT true CHECK (one),
    resources_id      text        NOT NULL,
    resources_version integer     NOT NULL,
    published_at      timestamptz NOT NULL DEFAULT now()
);
