-- Outbox retention (producers/outbox_retention.py): published rows older than AGL_OUTBOX_RETENTION_S are deleted,
-- and the Idempotency-Keys recorded with them expire with them. These indexes let both deletes find their rows
-- by age instead of scanning the tables.
CREATE INDEX IF NOT EXISTS command_requests_created_at ON command_requests (created_at);
CREATE INDEX IF NOT EXISTS command_idempotency_keys_created_at ON command_idempotency_keys (created_at);
