ALTER TABLE api_keys DROP COLUMN disabled_at;
ALTER TABLE api_keys DROP COLUMN disabled_reason;
ALTER TABLE request_logs DROP COLUMN client_request_id;
