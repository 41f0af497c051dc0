-- The resources read model: every published version of every resources_id. Runs inside the generation schema.
CREATE TABLE resources (
    resources_id      text        NOT NULL,
    resources_version integer     NOT NULL,
    resources         jsonb       NOT NULL,
    names             text[]      NOT NULL,
    created_at        timestamptz NOT NULL,
    event_id          uuid        NOT NULL,
    PRIMARY KEY (resources_id, resources_version)
);
-- GET /v1/resources/latest: the greatest (created_at, resources_id, resources_version).
CREATE INDEX resources_latest ON resources (created_at DESC, resources_id DESC, resources_version DESC);
