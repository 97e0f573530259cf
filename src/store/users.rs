//! Users and their bearer tokens: `crl_` + 43 base64url chars, only the SHA-256 stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::schema::users;
use super::{DbConnection, StoreError, now, rfc3339};

/// Every token starts with this, so leaked tokens are easy to recognise and scan for.
pub const TOKEN_PREFIX: &str = "crl_";
/// `crl_` + 43 base64url characters (256 random bits).
pub const TOKEN_LEN: usize = 47;

/// One row of `users`. `token_hash` is the hex SHA-256 of the token, never the token.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: i32,
    pub name: String,
    pub token_hash: String,
    pub admin: bool,
    pub active: bool,
    pub rpm: Option<i32>,
    pub tpm: Option<i32>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl User {
    /// The shape of docs/ADMIN_API.md (`token_hash` is not shown).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "admin": self.admin,
            "active": self.active,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "created_at": rfc3339(self.created_at),
        })
    }
}

/// A fresh token from the OS random source.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// True for strings shaped like a corral token; anything else is refused before hashing.
pub fn looks_like_token(s: &str) -> bool {
    s.len() == TOKEN_LEN
        && s.starts_with(TOKEN_PREFIX)
        && s[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// SHA-256 of the token.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Lowercase hex of the token's SHA-256, as stored in `users.token_hash`.
pub fn hash_token(token: &str) -> String {
    hex(&token_digest(token))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Names are shown in tables and logs: keep them short and plain.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if name.is_empty() || name.len() > 64 || !name.chars().all(ok_char) {
        return Err(StoreError::Invalid(format!(
            "user name `{}` must be 1-64 characters of letters, digits, . _ - @",
            name.chars().take(80).collect::<String>()
        )));
    }
    if name == "anonymous" {
        return Err(StoreError::Invalid(
            "`anonymous` is reserved for auth.allow_anonymous".into(),
        ));
    }
    Ok(())
}

fn limit(field: &str, v: Option<u32>) -> Result<Option<i32>, StoreError> {
    v.map(|n| i32::try_from(n).map_err(|_| StoreError::Invalid(format!("{field} is too large"))))
        .transpose()
}

/// Creates a user; returns it with its token (shown once, never stored).
pub fn create(
    conn: &mut DbConnection,
    name: &str,
    admin: bool,
    rpm: Option<u32>,
    tpm: Option<u32>,
) -> Result<(User, String), StoreError> {
    validate_name(name)?;
    let (rpm, tpm) = (limit("rpm", rpm)?, limit("tpm", tpm)?);
    let token = new_token();
    let t = now();
    let inserted = diesel::insert_into(users::table)
        .values((
            users::name.eq(name),
            users::token_hash.eq(hash_token(&token)),
            users::admin.eq(admin),
            users::active.eq(true),
            users::rpm.eq(rpm),
            users::tpm.eq(tpm),
            users::created_at.eq(t),
            users::updated_at.eq(t),
        ))
        .execute(conn);
    match inserted {
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
            return Err(StoreError::Conflict(format!(
                "user `{name}` already exists"
            )));
        }
        other => other?,
    };
    Ok((get_required(conn, name)?, token))
}

pub fn list(conn: &mut DbConnection) -> Result<Vec<User>, StoreError> {
    Ok(users::table
        .select(User::as_select())
        .order(users::name.asc())
        .load(conn)?)
}

pub fn get(conn: &mut DbConnection, name: &str) -> Result<Option<User>, StoreError> {
    Ok(users::table
        .select(User::as_select())
        .filter(users::name.eq(name))
        .first(conn)
        .optional()?)
}

fn get_required(conn: &mut DbConnection, name: &str) -> Result<User, StoreError> {
    get(conn, name)?.ok_or_else(|| StoreError::NotFound(format!("no user named `{name}`")))
}

/// Every active user, for the authenticator's cache.
pub fn active(conn: &mut DbConnection) -> Result<Vec<User>, StoreError> {
    Ok(users::table
        .select(User::as_select())
        .filter(users::active.eq(true))
        .load(conn)?)
}

/// Activates or deactivates a user; a deactivated user's token stops working.
pub fn set_active(conn: &mut DbConnection, name: &str, active: bool) -> Result<User, StoreError> {
    let n = diesel::update(users::table.filter(users::name.eq(name)))
        .set((users::active.eq(active), users::updated_at.eq(now())))
        .execute(conn)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("no user named `{name}`")));
    }
    get_required(conn, name)
}

/// Gives a user a new token; the old one stops working.
pub fn rotate(conn: &mut DbConnection, name: &str) -> Result<(User, String), StoreError> {
    let token = new_token();
    let n = diesel::update(users::table.filter(users::name.eq(name)))
        .set((
            users::token_hash.eq(hash_token(&token)),
            users::updated_at.eq(now()),
        ))
        .execute(conn)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("no user named `{name}`")));
    }
    Ok((get_required(conn, name)?, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_documented_shape() {
        let t = new_token();
        assert_eq!(t.len(), TOKEN_LEN);
        assert!(looks_like_token(&t), "{t}");
        assert_ne!(t, new_token());
        assert_eq!(hash_token(&t).len(), 64);
        assert!(!looks_like_token("crl_' OR 1=1 --"));
        assert!(!looks_like_token(&format!("crl_{}", "a".repeat(42))));
        assert!(!looks_like_token(&format!("crl_{}é", "a".repeat(41))));
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("alice@example.com").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name("anonymous").is_err());
        assert!(validate_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
