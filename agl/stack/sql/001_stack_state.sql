-- The stack's own tables, in the "stack" migration namespace (run by `agl up` after the core migrations).
-- Databases migrated before this namespace existed got stack_state from core's 001_foundation, so this is a
-- no-op there; from here on, changes to the stack's tables are migrations of this namespace, never of core.

-- Small facts the stack must remember across restarts: the broker log epoch its consumer positions belong to,
-- the archive's high watermarks at the last stop, when a log loss was last accepted.
CREATE TABLE IF NOT EXISTS stack_state (
    key        text        PRIMARY KEY,
    value      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
