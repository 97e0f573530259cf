//! Persistence: users, upstream keys, request logs and usage aggregates (diesel, SQLite or Postgres).
