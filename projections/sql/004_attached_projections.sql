-- Projections a user attached (`agl projections attach module:object`). `agl up` runs one worker for each row
-- whose detached_at is null and looks at this table every few seconds, so an attach or a detach takes effect on a
-- running stack. The registry lives here, not in a file, so every supervisor and CLI sharing the database agree.
CREATE TABLE IF NOT EXISTS attached_projections (
    name        text        PRIMARY KEY,
    -- module:object naming the Projection, imported by the worker process
    reference   text        NOT NULL,
    -- the directory the module was imported from when attached, put on the worker's sys.path, so the supervisor
    -- finds a module that lives beside the user's shell rather than in an installed package
    python_path text,
    -- bumped by every attach: the supervisor restarts the worker on the new code, and retries one it gave up on
    revision    integer     NOT NULL DEFAULT 1,
    attached_at timestamptz NOT NULL DEFAULT now(),
    -- set by detach: the worker stops, its tables and positions stay (attach again resumes where it stood)
    detached_at timestamptz,
    -- set by the supervisor once the worker of a detached projection has stopped, so `detach --drop` drops tables
    -- nobody writes any more
    stopped_at  timestamptz
);
