//! `corral users …` and `corral migrate`: blocking commands that print for a person.

use crate::config::Config;
use crate::store::users::{self, User};
use crate::store::{Store, StoreError, rfc3339};

use super::aligned;

/// `corral users …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum UsersCmd {
    /// Create a user and print its token (shown once).
    Create {
        name: String,
        /// May use the admin API, the dashboard and model management.
        #[arg(long)]
        admin: bool,
        /// Requests per minute allowed (default: unlimited).
        #[arg(long)]
        rpm: Option<u32>,
        /// Tokens per minute allowed (default: unlimited).
        #[arg(long)]
        tpm: Option<u32>,
    },
    /// List users (never tokens).
    List,
    /// Refuse the user's token from now on.
    Deactivate { name: String },
    /// Accept the user's token again.
    Activate { name: String },
    /// Issue a new token; the old one stops working.
    Rotate { name: String },
}

fn open(cfg: &Config) -> Result<Store, String> {
    Store::connect_once(&cfg.database).map_err(|e| e.to_string())
}

/// Runs a `users` subcommand; errors are one sentence for stderr (exit code 1).
pub fn run_users(cfg: &Config, cmd: UsersCmd) -> Result<(), String> {
    let store = open(cfg)?;
    let err = |e: StoreError| e.to_string();
    match cmd {
        UsersCmd::Create {
            name,
            admin,
            rpm,
            tpm,
        } => {
            let (user, token) = store
                .blocking(|c| users::create(c, &name, admin, rpm, tpm))
                .map_err(err)?;
            println!(
                "created user `{}`{}; token (shown once, store it now):",
                user.name,
                if user.admin { " (admin)" } else { "" }
            );
            println!("{token}");
        }
        UsersCmd::List => {
            let all = store.blocking(users::list).map_err(err)?;
            print!("{}", table(&all));
        }
        UsersCmd::Deactivate { name } => {
            store
                .blocking(|c| users::set_active(c, &name, false))
                .map_err(err)?;
            announce_revocation(cfg, &name);
            println!("deactivated `{name}`; its token is refused within the auth cache TTL");
        }
        UsersCmd::Activate { name } => {
            store
                .blocking(|c| users::set_active(c, &name, true))
                .map_err(err)?;
            println!("activated `{name}`");
        }
        UsersCmd::Rotate { name } => {
            let (_, token) = store.blocking(|c| users::rotate(c, &name)).map_err(err)?;
            announce_revocation(cfg, &name);
            println!("new token for `{name}` (shown once; the old one no longer works):");
            println!("{token}");
        }
    }
    Ok(())
}

/// With Redis configured, running replicas drop the user's cached token at once.
fn announce_revocation(cfg: &Config, name: &str) {
    if cfg.redis.url.is_empty() {
        return;
    }
    if let Err(e) = crate::actors::cluster_sync::publish_revocation_once(&cfg.redis.url, name) {
        eprintln!(
            "warning: could not tell running replicas through Redis ({e}); they refuse the old token within the auth cache TTL"
        );
    }
}

/// `corral migrate`: applies pending migrations and says how many.
pub fn run_migrate(cfg: &Config) -> Result<(), String> {
    let store = Store::open_once(&cfg.database).map_err(|e| e.to_string())?;
    let n = store.migrate().map_err(|e| e.to_string())?;
    println!("applied {n} migration(s); database is up to date");
    Ok(())
}

/// Users as an aligned text table.
pub fn table(users: &[User]) -> String {
    let limit = |v: Option<i32>| v.map_or_else(|| "-".to_string(), |n| n.to_string());
    let mut rows = vec![[
        "NAME".to_string(),
        "ADMIN".into(),
        "ACTIVE".into(),
        "RPM".into(),
        "TPM".into(),
        "CREATED".into(),
    ]];
    for u in users {
        rows.push([
            u.name.clone(),
            if u.admin { "yes" } else { "no" }.into(),
            if u.active { "yes" } else { "no" }.into(),
            limit(u.rpm),
            limit(u.tpm),
            rfc3339(u.created_at),
        ]);
    }
    aligned(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_aligned() {
        let t = chrono::DateTime::from_timestamp(0, 0).unwrap().naive_utc();
        let u = User {
            id: 1,
            name: "alice".into(),
            token_hash: "h".into(),
            admin: true,
            active: true,
            rpm: Some(60),
            tpm: None,
            created_at: t,
            updated_at: t,
        };
        let text = table(&[u]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME   ADMIN  ACTIVE  RPM  TPM"));
        assert!(lines[1].starts_with("alice  yes    yes     60   -"));
        assert!(!text.contains('h') || !text.contains("token"));
    }
}
