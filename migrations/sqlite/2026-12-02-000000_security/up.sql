-- The client's own x-request-id, kept beside the id corral gives every request (the key).
ALTER TABLE request_logs ADD COLUMN client_request_id TEXT;
-- Why and since when a key is disabled (`manual` is never undone automatically;
-- `failures` is re-probed), so a restart without Redis keeps both.
ALTER TABLE api_keys ADD COLUMN disabled_reason TEXT;
ALTER TABLE api_keys ADD COLUMN disabled_at TIMESTAMP;
