-- The projection engine: generations of each read model, progress figures, dead letters.

-- Each generation of a projection keeps its tables in its own schema (<name>_g<N>). Readers use the active
-- one; a rebuild fills a 'building' one from offset 0 and then switches readers in one transaction.
CREATE TABLE IF NOT EXISTS projection_generations (
    projection   text        NOT NULL,
    generation   integer     NOT NULL,
    schema_name  text        NOT NULL UNIQUE,
    version      integer     NOT NULL,
    state        text        NOT NULL CHECK (state IN ('building', 'active', 'retired')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz,
    PRIMARY KEY (projection, generation)
);
CREATE UNIQUE INDEX IF NOT EXISTS projection_generations_one_active
    ON projection_generations (projection) WHERE state = 'active';
CREATE UNIQUE INDEX IF NOT EXISTS projection_generations_one_building
    ON projection_generations (projection) WHERE state = 'building';

-- Progress figures written with each batch's positions (same transaction), for status and stall detection.
ALTER TABLE projection_offsets ADD COLUMN IF NOT EXISTS events_per_s real NOT NULL DEFAULT 0;
ALTER TABLE projection_offsets ADD COLUMN IF NOT EXISTS last_record_at timestamptz;

-- Records a projection could not apply: undecodable, of an unknown type, rejected by apply, or parked behind
-- an earlier dead letter of the same key. The partition keeps flowing; `agl dlq replay` applies them later.
CREATE TABLE IF NOT EXISTS dead_letters (
    id          bigserial   PRIMARY KEY,
    projection  text        NOT NULL,
    generation  integer     NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    key         bytea,
    event_id    uuid,
    event_type  text,
    reason      text        NOT NULL CHECK (reason IN ('decode', 'unknown_type', 'apply', 'blocked')),
    error       text        NOT NULL,
    payload     bytea,
    headers     jsonb       NOT NULL DEFAULT '[]',
    status      text        NOT NULL DEFAULT 'parked' CHECK (status IN ('parked', 'replayed', 'discarded')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    UNIQUE (projection, generation, topic, partition, "offset")
);
CREATE INDEX IF NOT EXISTS dead_letters_parked_keys
    ON dead_letters (projection, generation, key) WHERE status = 'parked';
