-- A request answered from another request's upstream call (duplicate suppression): its
-- tokens were spent once, by the row of the request that made the call.
ALTER TABLE request_logs ADD COLUMN shared BOOLEAN NOT NULL DEFAULT 0;
