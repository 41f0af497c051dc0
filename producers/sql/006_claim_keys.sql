-- A dequeue's Idempotency-Key, kept with the attempts it claimed: a dequeue whose answer was lost (the API died
-- after committing, a timeout) is resent with the same key and answered with the same claims, instead of
-- claiming more and leaving the first ones held by nobody until the watchdog's unresponsive deadline.
ALTER TABLE lifecycle_attempts ADD COLUMN IF NOT EXISTS claim_key text;
CREATE INDEX IF NOT EXISTS lifecycle_attempts_claim_key ON lifecycle_attempts (worker_id, claim_key)
    WHERE claim_key IS NOT NULL;
