-- Who closed a dead letter and why: `agl dlq discard ID --reason TEXT` records the operator and the reason, a
-- replay records itself (and skips an event whose id the projection had already applied). resolved_at says when.
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS resolved_by text;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS resolution text;
