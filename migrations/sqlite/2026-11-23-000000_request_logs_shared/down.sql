ALTER TABLE request_logs DROP COLUMN shared;
