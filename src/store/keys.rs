//! Upstream API keys stored in the database (`api_keys`): import, list, state and category.
//!
//! A stored key's id is [`derive_key_id`] of its secret, the same id a `keys_file` key
//! gets, so a key present in both places is one key. [`KeyRow`] has no secret field:
//! what lists and answers carry cannot leak one.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use serde_json::{Value, json};

use super::schema::{api_keys, key_states};
use super::{DbConnection, Store, StoreError, now, rfc3339};
use crate::keys::import::ImportedKey;
use crate::keys::state::DisableReason;
use crate::keys::{KeyPools, StoredKey, derive_key_id, secret_prefix};

/// `api_keys.state` of a key the gateway may use.
pub const STATE_ACTIVE: &str = "active";
/// `api_keys.state` of a key the gateway must not use.
pub const STATE_DISABLED: &str = "disabled";

/// One stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub struct KeyRow {
    pub id: String,
    pub pool: String,
    /// What may be shown of the secret: `sk-ab12…`.
    pub prefix: String,
    pub label: Option<String>,
    pub category: Option<String>,
    pub state: String,
    pub failures: i32,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// `manual` or `failures` while disabled.
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<NaiveDateTime>,
}

impl KeyRow {
    pub fn enabled(&self) -> bool {
        self.state != STATE_DISABLED
    }

    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "pool": self.pool,
            "prefix": self.prefix,
            "label": self.label,
            "category": self.category,
            "state": self.state,
            "disabled_reason": self.disabled_reason,
            "disabled_at": self.disabled_at.map(rfc3339),
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = api_keys)]
struct NewKey<'a> {
    id: String,
    pool: &'a str,
    secret: &'a str,
    prefix: String,
    state: &'a str,
    failures: i32,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

/// What happened to one key of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Insert {
    Added {
        id: String,
    },
    /// Already stored, in `pool` (the import's own pool, or another one).
    Duplicate {
        id: String,
        pool: String,
    },
}

impl Insert {
    pub fn id(&self) -> &str {
        match self {
            Insert::Added { id } | Insert::Duplicate { id, .. } => id,
        }
    }
}

/// One [`Insert`] per imported key, in input order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InsertReport {
    pub outcomes: Vec<Insert>,
}

impl InsertReport {
    pub fn added(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o, Insert::Added { .. }))
            .count()
    }

    pub fn duplicates(&self) -> usize {
        self.outcomes.len() - self.added()
    }
}

/// Inserts row by row with `ON CONFLICT DO NOTHING` (which the multi backend cannot
/// express), so a key already stored, by id or by (pool, secret), is skipped and named.
macro_rules! insert_each {
    ($c:expr, $rows:expr, $pool:expr) => {{
        let mut out = Vec::with_capacity($rows.len());
        for row in $rows {
            let n = diesel::insert_into(api_keys::table)
                .values(row)
                .on_conflict_do_nothing()
                .execute($c)?;
            if n == 1 {
                out.push(Insert::Added { id: row.id.clone() });
                continue;
            }
            let stored: Option<String> = api_keys::table
                .select(api_keys::pool)
                .filter(api_keys::id.eq(&row.id))
                .first($c)
                .optional()?;
            out.push(Insert::Duplicate {
                id: row.id.clone(),
                pool: stored.unwrap_or_else(|| $pool.to_string()),
            });
        }
        Ok::<Vec<Insert>, DieselError>(out)
    }};
}

/// Stores `keys` in `pool` as active keys, in one transaction. Keys already stored (in
/// any pool: an id names one key) are left as they are and reported as duplicates.
pub fn insert_many(
    conn: &mut DbConnection,
    pool: &str,
    keys: &[ImportedKey],
) -> Result<InsertReport, StoreError> {
    let t = now();
    let rows: Vec<NewKey<'_>> = keys
        .iter()
        .map(|k| NewKey {
            id: derive_key_id(&k.secret),
            pool,
            secret: &k.secret,
            prefix: secret_prefix(&k.secret),
            state: STATE_ACTIVE,
            failures: 0,
            created_at: t,
            updated_at: t,
        })
        .collect();
    let outcomes = match conn {
        DbConnection::Sqlite(c) => c.immediate_transaction(|c| insert_each!(c, &rows, pool))?,
        DbConnection::Pg(c) => c.transaction(|c| insert_each!(c, &rows, pool))?,
    };
    Ok(InsertReport { outcomes })
}

/// Stored keys, of one pool or all, by pool then age.
pub fn list(conn: &mut DbConnection, pool: Option<&str>) -> Result<Vec<KeyRow>, StoreError> {
    let mut q = api_keys::table
        .select(KeyRow::as_select())
        .order((
            api_keys::pool.asc(),
            api_keys::created_at.asc(),
            api_keys::id.asc(),
        ))
        .into_boxed();
    if let Some(p) = pool {
        q = q.filter(api_keys::pool.eq(p.to_string()));
    }
    Ok(q.load(conn)?)
}

pub fn get(conn: &mut DbConnection, id: &str) -> Result<Option<KeyRow>, StoreError> {
    Ok(api_keys::table
        .select(KeyRow::as_select())
        .filter(api_keys::id.eq(id))
        .first(conn)
        .optional()?)
}

type StoredColumns = (String, String, String, String, Option<String>);

fn to_stored((pool, id, secret, state, category): StoredColumns) -> (String, StoredKey) {
    let enabled = state != STATE_DISABLED;
    (
        pool,
        StoredKey {
            id,
            secret,
            enabled,
            category,
        },
    )
}

/// Every stored key with its secret and pool, for [`KeyPools::add_keys`] at start-up.
pub fn load_stored(conn: &mut DbConnection) -> Result<Vec<(String, StoredKey)>, StoreError> {
    let rows: Vec<StoredColumns> = api_keys::table
        .select((
            api_keys::pool,
            api_keys::id,
            api_keys::secret,
            api_keys::state,
            api_keys::category,
        ))
        .order((api_keys::pool.asc(), api_keys::created_at.asc()))
        .load(conn)?;
    Ok(rows.into_iter().map(to_stored).collect())
}

/// One stored key with its secret and pool.
pub fn get_stored(
    conn: &mut DbConnection,
    id: &str,
) -> Result<Option<(String, StoredKey)>, StoreError> {
    let row: Option<StoredColumns> = api_keys::table
        .select((
            api_keys::pool,
            api_keys::id,
            api_keys::secret,
            api_keys::state,
            api_keys::category,
        ))
        .filter(api_keys::id.eq(id))
        .first(conn)
        .optional()?;
    Ok(row.map(to_stored))
}

/// Enables or disables a stored key by an operator's hand (enabling also clears its
/// failure count and disable reason). `None` when no stored key has that id.
pub fn set_state(
    conn: &mut DbConnection,
    id: &str,
    enabled: bool,
) -> Result<Option<KeyRow>, StoreError> {
    if enabled {
        record_enabled(conn, id)
    } else {
        record_disabled(conn, id, DisableReason::Manual)
    }
}

/// Records that a key is usable again (an operator, or a probe the upstream accepted).
pub fn record_enabled(conn: &mut DbConnection, id: &str) -> Result<Option<KeyRow>, StoreError> {
    let n = diesel::update(api_keys::table.filter(api_keys::id.eq(id)))
        .set((
            api_keys::state.eq(STATE_ACTIVE),
            api_keys::failures.eq(0),
            api_keys::disabled_reason.eq(None::<String>),
            api_keys::disabled_at.eq(None::<NaiveDateTime>),
            api_keys::updated_at.eq(now()),
        ))
        .execute(conn)?;
    if n == 0 {
        return Ok(None);
    }
    get(conn, id)
}

/// Records a disable with its reason and time, so a restart (without Redis) keeps both.
/// A failure disable never replaces an operator's.
pub fn record_disabled(
    conn: &mut DbConnection,
    id: &str,
    reason: DisableReason,
) -> Result<Option<KeyRow>, StoreError> {
    let t = now();
    let target = api_keys::table.filter(api_keys::id.eq(id));
    let changes = (
        api_keys::state.eq(STATE_DISABLED),
        api_keys::disabled_reason.eq(Some(reason.as_str())),
        api_keys::disabled_at.eq(Some(t)),
        api_keys::updated_at.eq(t),
    );
    let n = match reason {
        DisableReason::Manual => diesel::update(target).set(changes).execute(conn)?,
        DisableReason::Failures => diesel::update(
            target.filter(
                api_keys::disabled_reason
                    .is_null()
                    .or(api_keys::disabled_reason.ne(DisableReason::Manual.as_str())),
            ),
        )
        .set(changes)
        .execute(conn)?,
    };
    if n == 0 {
        return Ok(None);
    }
    get(conn, id)
}

/// Records the disable of a key that lives only in a `keys_file` (it has no `api_keys`
/// row, and its secret is not copied into the database): `false` when the key is stored,
/// whose row [`record_disabled`] keeps. A failure disable never replaces an operator's.
pub fn record_file_disabled(
    conn: &mut DbConnection,
    id: &str,
    pool: &str,
    reason: DisableReason,
) -> Result<bool, StoreError> {
    conn.transaction(|c| {
        let stored: i64 = api_keys::table
            .filter(api_keys::id.eq(id))
            .count()
            .get_result(c)?;
        if stored > 0 {
            return Ok(false);
        }
        let manual = DisableReason::Manual.as_str();
        let current: Option<String> = key_states::table
            .select(key_states::disabled_reason)
            .filter(key_states::id.eq(id))
            .first(c)
            .optional()?;
        if reason == DisableReason::Failures && current.as_deref() == Some(manual) {
            return Ok(true);
        }
        diesel::delete(key_states::table.filter(key_states::id.eq(id))).execute(c)?;
        diesel::insert_into(key_states::table)
            .values((
                key_states::id.eq(id),
                key_states::pool.eq(pool),
                key_states::disabled_reason.eq(reason.as_str()),
                key_states::disabled_at.eq(now()),
            ))
            .execute(c)?;
        Ok(true)
    })
}

/// Forgets the disable of a `keys_file` key (enabled again).
pub fn clear_file_disabled(conn: &mut DbConnection, id: &str) -> Result<(), StoreError> {
    diesel::delete(key_states::table.filter(key_states::id.eq(id))).execute(conn)?;
    Ok(())
}

/// Sets (or clears) a stored key's category. `None` when no stored key has that id.
pub fn set_category(
    conn: &mut DbConnection,
    id: &str,
    category: Option<&str>,
) -> Result<Option<KeyRow>, StoreError> {
    let n = diesel::update(api_keys::table.filter(api_keys::id.eq(id)))
        .set((
            api_keys::category.eq(category),
            api_keys::updated_at.eq(now()),
        ))
        .execute(conn)?;
    if n == 0 {
        return Ok(None);
    }
    get(conn, id)
}

/// Adds every stored key to its pool in `pools` (keys of pools the configuration no
/// longer has are skipped with a warning). Returns how many keys were added.
pub async fn load_into(store: &Store, pools: &KeyPools) -> Result<usize, StoreError> {
    let stored = store.run(load_stored).await?;
    let n = add_to_pools(stored, pools);
    restore_disables(store.run(failure_disables).await?, pools);
    restore_file_disables(store.run(file_disables).await?, pools);
    Ok(n)
}

/// Disables of `keys_file` keys, with their reason and time.
fn file_disables(
    conn: &mut DbConnection,
) -> Result<Vec<(String, String, NaiveDateTime)>, StoreError> {
    Ok(key_states::table
        .select((
            key_states::id,
            key_states::disabled_reason,
            key_states::disabled_at,
        ))
        .load(conn)?)
}

fn restore_file_disables(rows: Vec<(String, String, NaiveDateTime)>, pools: &KeyPools) {
    for (id, reason, at) in rows {
        let reason = if reason == DisableReason::Manual.as_str() {
            DisableReason::Manual
        } else {
            DisableReason::Failures
        };
        restore_disables_as(&id, reason, Some(at), pools);
    }
}

/// Keys disabled after refused credentials, with when: the pools load them as disabled by
/// an operator; these are marked for the re-probe.
fn failure_disables(
    conn: &mut DbConnection,
) -> Result<Vec<(String, Option<NaiveDateTime>)>, StoreError> {
    Ok(api_keys::table
        .select((api_keys::id, api_keys::disabled_at))
        .filter(api_keys::state.eq(STATE_DISABLED))
        .filter(api_keys::disabled_reason.eq(DisableReason::Failures.as_str()))
        .load(conn)?)
}

fn restore_disables(rows: Vec<(String, Option<NaiveDateTime>)>, pools: &KeyPools) {
    for (id, at) in rows {
        restore_disables_as(&id, DisableReason::Failures, at, pools);
    }
}

/// Marks `id` disabled for `reason` since `at` (now when unknown) in whichever pool has it.
fn restore_disables_as(
    id: &str,
    reason: DisableReason,
    at: Option<NaiveDateTime>,
    pools: &KeyPools,
) {
    let now = std::time::Instant::now();
    let utc = chrono::Utc::now().naive_utc();
    let ago = at.and_then(|t| (utc - t).to_std().ok()).unwrap_or_default();
    let since = now.checked_sub(ago).unwrap_or(now);
    pools.restore_disabled(id, reason, since);
}

/// [`load_into`] for threads that may block.
pub fn load_into_blocking(store: &Store, pools: &KeyPools) -> Result<usize, StoreError> {
    let stored = store.blocking(load_stored)?;
    Ok(add_to_pools(stored, pools))
}

fn add_to_pools(stored: Vec<(String, StoredKey)>, pools: &KeyPools) -> usize {
    let names = pools.pool_names();
    let mut by_pool: std::collections::BTreeMap<String, Vec<StoredKey>> = Default::default();
    for (pool, key) in stored {
        by_pool.entry(pool).or_default().push(key);
    }
    let mut added = 0;
    for (pool, keys) in by_pool {
        if !names.contains(&pool) {
            tracing::warn!(pool = %pool, keys = keys.len(), "stored keys of a pool the configuration does not have are not used");
            continue;
        }
        added += keys.len();
        tracing::info!(pool = %pool, keys = keys.len(), "loaded stored keys");
        pools.add_keys(&pool, keys);
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, DatabaseConfig, KeyPoolConfig};
    use crate::keys::parse_keys;

    const A: &str = "sk-aaaaaaaaaaaaaaaa1";
    const B: &str = "sk-bbbbbbbbbbbbbbbb2";

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DatabaseConfig {
            url: format!("sqlite://{}", dir.path().join("k.db").display()),
            pool_size: 2,
        };
        let store = Store::connect(&cfg).unwrap();
        (dir, store)
    }

    #[test]
    fn insert_counts_duplicates_across_imports_and_pools() {
        let (_dir, store) = store();
        let keys = parse_keys(&format!("{A}\n{B}\n")).keys;
        let first = store.blocking(|c| insert_many(c, "cloud", &keys)).unwrap();
        assert_eq!((first.added(), first.duplicates()), (2, 0));
        assert_eq!(first.outcomes[0].id(), derive_key_id(A));
        let again = store.blocking(|c| insert_many(c, "cloud", &keys)).unwrap();
        assert_eq!((again.added(), again.duplicates()), (0, 2));
        let other = store
            .blocking(|c| insert_many(c, "other", &keys[..1]))
            .unwrap();
        assert_eq!(
            other.outcomes,
            [Insert::Duplicate {
                id: derive_key_id(A),
                pool: "cloud".into()
            }]
        );
        let rows = store.blocking(|c| list(c, Some("cloud"))).unwrap();
        assert_eq!(rows.len(), 2);
        let a = rows.iter().find(|r| r.id == derive_key_id(A)).unwrap();
        assert_eq!(a.prefix, secret_prefix(A));
        assert!(
            store
                .blocking(|c| list(c, Some("other")))
                .unwrap()
                .is_empty()
        );
        let shown = format!("{rows:?}") + &rows[0].to_json().to_string();
        assert!(!shown.contains(A) && !shown.contains(B), "{shown}");
    }

    #[test]
    fn state_and_category_round_trip_and_load() {
        let (_dir, store) = store();
        let keys = parse_keys(A).keys;
        store.blocking(|c| insert_many(c, "cloud", &keys)).unwrap();
        let id = derive_key_id(A);
        let row = store
            .blocking(|c| set_state(c, &id, false))
            .unwrap()
            .unwrap();
        assert_eq!(row.state, STATE_DISABLED);
        assert!(!row.enabled());
        assert!(
            store
                .blocking(|c| set_state(c, "nope", false))
                .unwrap()
                .is_none()
        );
        let row = store
            .blocking(|c| set_category(c, &id, Some("pro")))
            .unwrap()
            .unwrap();
        assert_eq!(row.category.as_deref(), Some("pro"));
        let stored = store.blocking(load_stored).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].0, "cloud");
        assert_eq!(stored[0].1.secret, A);
        assert!(!stored[0].1.enabled);

        let cfg = Config {
            key_pools: vec![KeyPoolConfig {
                name: "cloud".into(),
                ..KeyPoolConfig::default()
            }],
            ..Config::default()
        };
        let metrics = crate::metrics::Metrics::new();
        let pools = KeyPools::empty(&cfg, &metrics, crate::keys::Clock::now());
        assert_eq!(load_into_blocking(&store, &pools).unwrap(), 1);
        assert_eq!(pools.key(&id).unwrap()["state"], "disabled");
        assert_eq!(pools.key(&id).unwrap()["category"], "pro");

        store.blocking(|c| set_state(c, &id, true)).unwrap();
        assert!(store.blocking(load_stored).unwrap()[0].1.enabled);
    }
}
