DROP TABLE usage_minute;
DROP TABLE request_logs;
DROP TABLE api_keys;
DROP TABLE users;
