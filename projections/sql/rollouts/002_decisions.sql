-- Statuses come from the lifecycle decider's numbered decisions (rollout.transitioned): remember the newest one
-- applied to each rollout and attempt, and the late reports the decider recorded.
ALTER TABLE rollouts ADD COLUMN decision_seq integer NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN decision_seq integer NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN late_reports integer NOT NULL DEFAULT 0;
