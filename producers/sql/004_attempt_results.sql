-- An attempt's results (its spans and rewards) sent with its finish in a batch of reports
-- (POST /v1/workers/{worker_id}/reports) are recorded once: a resent finish finds this set and records nothing.
ALTER TABLE lifecycle_attempts ADD COLUMN IF NOT EXISTS results_recorded boolean NOT NULL DEFAULT false;
