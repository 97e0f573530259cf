-- corral's tables on SQLite. Keep column names, order and nullability identical to
-- migrations/postgres: src/store/schema.rs serves both (scripts/schema-check.sh checks it).
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    admin BOOLEAN NOT NULL DEFAULT 0,
    active BOOLEAN NOT NULL DEFAULT 1,
    rpm INTEGER,
    tpm INTEGER,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    pool TEXT NOT NULL,
    secret TEXT NOT NULL,
    prefix TEXT NOT NULL,
    label TEXT,
    category TEXT,
    state TEXT NOT NULL DEFAULT 'active',
    failures INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (pool, secret)
);

CREATE TABLE request_logs (
    request_id TEXT PRIMARY KEY NOT NULL,
    time TIMESTAMP NOT NULL,
    user_name TEXT NOT NULL,
    client_ip TEXT,
    dialect TEXT NOT NULL,
    model_requested TEXT NOT NULL,
    model_served TEXT,
    backend TEXT,
    key_id TEXT,
    status INTEGER NOT NULL,
    tokens_in BIGINT NOT NULL DEFAULT 0,
    tokens_out BIGINT NOT NULL DEFAULT 0,
    tokens_estimated BOOLEAN NOT NULL DEFAULT 0,
    ttfb_ms BIGINT,
    duration_ms BIGINT NOT NULL,
    error TEXT,
    category TEXT,
    body BLOB
);
CREATE INDEX request_logs_time ON request_logs (time);
CREATE INDEX request_logs_user_time ON request_logs (user_name, time);

CREATE TABLE usage_minute (
    minute TIMESTAMP NOT NULL,
    model TEXT NOT NULL,
    user_name TEXT NOT NULL,
    backend TEXT NOT NULL,
    key_id TEXT NOT NULL,
    requests BIGINT NOT NULL DEFAULT 0,
    errors BIGINT NOT NULL DEFAULT 0,
    tokens_in BIGINT NOT NULL DEFAULT 0,
    tokens_out BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, model, user_name, backend, key_id)
);
