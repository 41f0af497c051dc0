-- The workers read model: one row per worker, each group of facts latest-wins by (occurred_at, event_id).
-- The status (idle, busy, unknown, stopped) depends on the time of reading, so it is derived by the read query.
CREATE TABLE workers (
    worker_id          text        PRIMARY KEY,
    capabilities       text[]      NOT NULL,
    slots              integer,
    registered_at      timestamptz,
    registered_event   uuid,
    deregistered_at    timestamptz,
    deregistered_event uuid,
    deregister_reason  text,
    last_heartbeat_at  timestamptz,
    heartbeat_event    uuid,
    busy_slots         integer     NOT NULL,
    attempts           jsonb       NOT NULL,
    stats              jsonb
);
