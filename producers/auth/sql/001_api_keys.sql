-- API keys (namespace "auth"). Only a SHA-256 of each key's secret is stored: keys are 32 random bytes, so a
-- plain hash cannot be reversed by guessing, and a stolen table grants nothing. Revoked keys are kept (revoked_at)
-- so `agl keys list` still shows who had access.
CREATE TABLE IF NOT EXISTS api_keys (
    key_id     text        PRIMARY KEY,
    name       text        NOT NULL DEFAULT '',
    scopes     text[]      NOT NULL,
    hash       bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
