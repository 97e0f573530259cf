-- Disables of keys that live only in a keys_file (no api_keys row: the secret stays in the
-- file), with why and since when, so a restart without Redis keeps them.
CREATE TABLE key_states (
    id TEXT PRIMARY KEY NOT NULL,
    pool TEXT NOT NULL,
    disabled_reason TEXT NOT NULL,
    disabled_at TIMESTAMP NOT NULL
);
