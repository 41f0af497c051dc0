-- The knowledge read model: documents, and their chunks with recorded vectors. Runs inside the generation schema.
-- The vector column and its HNSW index are added by the projection's model migration (the dimension is the
-- model's), see projections/knowledge.py.
CREATE TABLE knowledge_documents (
    collection          text        NOT NULL,
    document_id         text        NOT NULL,
    latest_version      bigint      NOT NULL,          -- the newest version upserted
    indexed_version     bigint,                        -- the version whose chunks are searchable (null: none yet)
    deleted_through     bigint      NOT NULL DEFAULT 0, -- versions up to this one were deleted: their chunks never return
    deleted             boolean     NOT NULL DEFAULT false,
    text                text        NOT NULL,
    metadata            jsonb       NOT NULL,
    chunk_count         integer     NOT NULL DEFAULT 0,
    model_id            text,
    updated_at          timestamptz NOT NULL,
    PRIMARY KEY (collection, document_id)
);

CREATE TABLE knowledge_chunks (
    collection       text    NOT NULL,
    document_id      text    NOT NULL,
    chunk_index      integer NOT NULL,
    document_version bigint  NOT NULL,
    heading          text    NOT NULL,
    text             text    NOT NULL,
    start_char       integer NOT NULL,
    end_char         integer NOT NULL,
    metadata         jsonb   NOT NULL,
    -- 'simple': no language-specific stemming, since collections may be in any language.
    tsv              tsvector GENERATED ALWAYS AS (to_tsvector('simple', heading || ' ' || text)) STORED,
    PRIMARY KEY (collection, document_id, chunk_index)
);
CREATE INDEX knowledge_chunks_tsv ON knowledge_chunks USING gin (tsv);
CREATE INDEX knowledge_chunks_metadata ON knowledge_chunks USING gin (metadata jsonb_path_ops);

-- Parts of a large document version, held until every part has arrived (a document is never half indexed).
CREATE TABLE knowledge_pending_parts (
    collection       text    NOT NULL,
    document_id      text    NOT NULL,
    document_version bigint  NOT NULL,
    part             integer NOT NULL,
    parts            integer NOT NULL,
    event            jsonb   NOT NULL,
    PRIMARY KEY (collection, document_id, document_version, part)
);
