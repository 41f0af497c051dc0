-- A rollout's history (GET /v1/rollouts/{id}/events) reads the records of one key; without this it scans the archive.
CREATE INDEX events_key ON events (key, topic, partition, "offset");
