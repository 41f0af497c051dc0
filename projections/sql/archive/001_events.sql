-- Every record of every event topic, for SQL analytics and for replay beyond broker retention.
-- value and headers are kept byte for byte, so a reset log can be restored with the same partitions and order.
CREATE TABLE events (
    topic      text        NOT NULL,
    partition  integer     NOT NULL,
    "offset"   bigint      NOT NULL,
    event_id   uuid,
    type       text,
    version    integer,
    key        bytea,
    timestamp  timestamptz NOT NULL,
    payload    jsonb,
    value      bytea,
    headers    jsonb       NOT NULL,
    PRIMARY KEY (topic, partition, "offset")
);
CREATE INDEX events_type ON events (type, timestamp);
CREATE INDEX events_event_id ON events (event_id);
