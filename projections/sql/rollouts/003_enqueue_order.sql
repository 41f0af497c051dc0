-- A page of all rollouts (no status or mode filter) is read in enqueue order from this index instead of sorting
-- the whole table (projections.rollouts.page_query).
CREATE INDEX rollouts_enqueue_order ON rollouts (enqueued_at, rollout_id);
