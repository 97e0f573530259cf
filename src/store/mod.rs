//! Persistence: users, upstream keys, request logs and usage aggregates (diesel, SQLite or Postgres).
//!
//! One `DbConnection` (diesel `MultiConnection`) serves both databases; the scheme of
//! `database.url` picks which. Reads go through the multi-backend query builder; writes
//! that need `ON CONFLICT` (which the multi backend cannot express) dispatch to the
//! concrete connection. Every call blocks: async code goes through
//! [`Store::run`], which moves the work onto tokio's blocking pool.

pub mod keys;
pub mod logs;
pub mod schema;
pub mod stats;
pub mod users;

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, SubsecRound, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ManageConnection, Pool, R2D2Connection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::config::DatabaseConfig;
use crate::error::{ErrorKind, GatewayError};

/// A connection to whichever database `database.url` names.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Sqlite(diesel::SqliteConnection),
    Pg(diesel::PgConnection),
}

// Embedded at compile time; build.rs makes cargo rebuild when `migrations/` changes.
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
/// Key of the Postgres advisory lock held while migrating ("corral" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x636f_7272_616c;
/// How long a request waits for a pooled connection before the database counts as down.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long SQLite waits on a locked database (another replica or process writing).
const SQLITE_BUSY_TIMEOUT_MS: u32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database.url: {0}")]
    BadUrl(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("migrations failed: {0}")]
    Migration(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
}

impl StoreError {
    /// The error a client sees; database details stay in the server log.
    pub fn to_gateway(&self) -> GatewayError {
        match self {
            StoreError::NotFound(m) => GatewayError::not_found(m.clone()),
            StoreError::Conflict(m) | StoreError::Invalid(m) => {
                GatewayError::bad_request(m.clone())
            }
            other => {
                tracing::error!(error = %other, "database call failed");
                GatewayError::new(ErrorKind::Internal, "the database is unavailable")
            }
        }
    }
}

/// Which database a store talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A file path (relative to the working directory, or absolute).
    Sqlite(String),
    Postgres(String),
}

impl Target {
    /// `sqlite://corral.db` (relative), `sqlite:///abs/path.db`, `postgres://…`, `postgresql://…`.
    pub fn parse(url: &str) -> Result<Target, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StoreError::BadUrl(
                    "`sqlite://` needs a file, like sqlite://corral.db".into(),
                ));
            }
            return Ok(Target::Sqlite(path.to_string()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target::Postgres(url.to_string()));
        }
        Err(StoreError::BadUrl(format!(
            "`{}` must start with sqlite://, postgres:// or postgresql://",
            crate::config::redact_url(url)
        )))
    }
}

/// r2d2 manager that opens the right connection for the URL's scheme (the derived
/// `establish` would try SQLite on a Postgres URL and create a file of that name).
#[derive(Debug)]
pub struct Manager {
    target: Target,
}

impl ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        match &self.target {
            Target::Sqlite(path) => {
                let mut c = diesel::SqliteConnection::establish(path)
                    .map_err(diesel::r2d2::Error::ConnectionError)?;
                // WAL lets readers run beside the log writer; busy_timeout makes a second
                // process (or replica) wait for the write lock instead of failing.
                c.batch_execute(&format!(
                    "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;"
                ))
                .map_err(diesel::r2d2::Error::QueryError)?;
                Ok(DbConnection::Sqlite(c))
            }
            Target::Postgres(url) => diesel::PgConnection::establish(url)
                .map(DbConnection::Pg)
                .map_err(diesel::r2d2::Error::ConnectionError),
        }
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), Self::Error> {
        conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        conn.is_broken()
    }
}

/// Handle on the database: a connection pool. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool<Manager>,
    target: std::sync::Arc<Target>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &*self.target {
            Target::Sqlite(p) => format!("sqlite {p}"),
            Target::Postgres(_) => "postgres".into(),
        };
        f.debug_struct("Store").field("target", &kind).finish()
    }
}

impl Store {
    /// Opens the pool and applies pending migrations. Blocks: call at start-up.
    pub fn connect(cfg: &DatabaseConfig) -> Result<Store, StoreError> {
        let store = Store::open(cfg)?;
        store.migrate()?;
        Ok(store)
    }

    /// For one-shot commands: one connection, opened when first used and never refilled in
    /// the background (a pool thread still connecting while the process exits can abort it
    /// inside libpq's Kerberos code).
    pub fn connect_once(cfg: &DatabaseConfig) -> Result<Store, StoreError> {
        let store = Store::open_once(cfg)?;
        store.migrate()?;
        Ok(store)
    }

    /// [`connect_once`](Self::connect_once) without migrating.
    pub fn open_once(cfg: &DatabaseConfig) -> Result<Store, StoreError> {
        Store::open_sized(cfg, 1, 0)
    }

    /// Opens the pool without migrating.
    pub fn open(cfg: &DatabaseConfig) -> Result<Store, StoreError> {
        Store::open_sized(cfg, cfg.pool_size.max(1), 1)
    }

    fn open_sized(cfg: &DatabaseConfig, size: u32, min_idle: u32) -> Result<Store, StoreError> {
        let target = Target::parse(&cfg.url)?;
        let pool = Pool::builder()
            .max_size(size)
            .min_idle(Some(min_idle))
            .connection_timeout(CHECKOUT_TIMEOUT)
            .build(Manager {
                target: target.clone(),
            })
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Store {
            pool,
            target: std::sync::Arc::new(target),
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Applies pending migrations under a lock (Postgres advisory lock, SQLite
    /// `BEGIN IMMEDIATE`), so replicas starting together on an empty database don't race.
    /// Returns how many were applied.
    pub fn migrate(&self) -> Result<usize, StoreError> {
        self.blocking(migrate)
    }

    /// True when every embedded migration has been applied.
    pub fn migrations_applied(&self) -> Result<bool, StoreError> {
        self.blocking(|conn| {
            let pending = match conn {
                DbConnection::Sqlite(c) => c.has_pending_migration(SQLITE_MIGRATIONS),
                DbConnection::Pg(c) => c.has_pending_migration(PG_MIGRATIONS),
            };
            pending
                .map(|p| !p)
                .map_err(|e| StoreError::Migration(e.to_string()))
        })
    }

    /// Runs `f` on a pooled connection in the calling thread. Never call it on an async worker.
    pub fn blocking<T>(
        &self,
        f: impl FnOnce(&mut DbConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.blocking_within(CHECKOUT_TIMEOUT, f)
    }

    /// [`Store::blocking`], waiting at most `wait` for a connection.
    pub fn blocking_within<T>(
        &self,
        wait: Duration,
        f: impl FnOnce(&mut DbConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self
            .pool
            .get_timeout(wait)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        f(&mut conn)
    }

    /// Runs `f` on a pooled connection on tokio's blocking pool; for handlers and actors.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.blocking(f))
            .await
            .map_err(|e| StoreError::Unavailable(format!("database task failed: {e}")))?
    }

    /// One round trip to the database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|c| c.ping().map_err(StoreError::from)).await
    }

    /// [`Store::ping`] for threads that may block.
    pub fn ping_blocking(&self) -> Result<(), StoreError> {
        self.ping_within(CHECKOUT_TIMEOUT)
    }

    /// [`Store::ping_blocking`], waiting at most `wait` for a connection.
    pub fn ping_within(&self, wait: Duration) -> Result<(), StoreError> {
        self.blocking_within(wait, |c| c.ping().map_err(StoreError::from))
    }
}

fn migrate(conn: &mut DbConnection) -> Result<usize, StoreError> {
    let mig = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Migration(e.to_string());
    match conn {
        DbConnection::Pg(c) => {
            diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
                .execute(c)?;
            let applied = c.run_pending_migrations(PG_MIGRATIONS).map(|v| v.len());
            let unlocked =
                diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
                    .execute(c);
            let applied = applied.map_err(mig)?;
            unlocked?;
            Ok(applied)
        }
        DbConnection::Sqlite(c) => c.immediate_transaction(|c| {
            c.run_pending_migrations(SQLITE_MIGRATIONS)
                .map(|v| v.len())
                .map_err(mig)
        }),
    }
}

/// Now, at the microsecond precision both databases keep.
pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}

/// RFC 3339 UTC text for a stored timestamp (`2025-01-01T10:00:00.123Z`).
pub fn rfc3339(t: NaiveDateTime) -> String {
    DateTime::<Utc>::from_naive_utc_and_offset(t, Utc).to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_backend() {
        assert_eq!(
            Target::parse("sqlite://corral.db").unwrap(),
            Target::Sqlite("corral.db".into())
        );
        assert_eq!(
            Target::parse("sqlite:///var/lib/corral.db").unwrap(),
            Target::Sqlite("/var/lib/corral.db".into())
        );
        assert!(matches!(
            Target::parse("postgresql://u:p@h/db").unwrap(),
            Target::Postgres(_)
        ));
        let err = Target::parse("mysql://u:secret@h/db")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("database.url") && !err.contains("secret"),
            "{err}"
        );
        assert!(Target::parse("sqlite://").is_err());
    }

    #[test]
    fn sqlite_store_migrates_once_and_pings() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DatabaseConfig {
            url: format!("sqlite://{}", dir.path().join("t.db").display()),
            pool_size: 2,
        };
        let store = Store::connect(&cfg).unwrap();
        assert!(store.migrations_applied().unwrap());
        assert_eq!(store.migrate().unwrap(), 0);
        store.ping_blocking().unwrap();
    }
}
