//! `corral keys …`: import, list, enable, disable stored upstream keys; `--validate` probes
//! new keys with `keys::probe`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::keys::import::{LineOutcome, file_keys, parse_keys};
use crate::keys::probe::{ProbeTarget, Verdict, probe_all_blocking};
use crate::keys::{derive_key_id, secret_prefix};
use crate::store::keys::{self, Insert, KeyRow};
use crate::store::{Store, StoreError, rfc3339};

use super::aligned;

/// `corral keys …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCmd {
    /// Store the keys of FILE (one a line, or email----password----session----key) in a pool.
    Import {
        file: PathBuf,
        /// The `[[key_pools]]` entry the keys belong to.
        #[arg(long)]
        pool: String,
        /// Check each new key against the pool's backend; refused keys are stored disabled.
        #[arg(long)]
        validate: bool,
    },
    /// List keys (stored ones and those of `keys_file`s), never their secrets.
    List {
        #[arg(long)]
        pool: Option<String>,
    },
    /// Let the gateway use a stored key again.
    Enable { id: String },
    /// Stop the gateway from using a stored key.
    Disable { id: String },
}

/// Runs a `keys` subcommand, printing for a person; errors are one sentence for stderr.
pub fn run_keys(cfg: &Config, cmd: KeysCmd) -> Result<(), String> {
    match cmd {
        KeysCmd::Import {
            file,
            pool,
            validate,
        } => {
            let summary = import(cfg, &open(cfg)?, &file, &pool, validate)?;
            print!("{}", summary.render());
        }
        KeysCmd::List { pool } => {
            let text = list(cfg, &open(cfg)?, pool.as_deref())?;
            print!("{text}");
        }
        KeysCmd::Enable { id } => println!("{}", set_enabled(cfg, &open(cfg)?, &id, true)?),
        KeysCmd::Disable { id } => println!("{}", set_enabled(cfg, &open(cfg)?, &id, false)?),
    }
    Ok(())
}

fn open(cfg: &Config) -> Result<Store, String> {
    Store::connect_once(&cfg.database).map_err(|e| e.to_string())
}

fn db(e: StoreError) -> String {
    e.to_string()
}

/// The pool must be configured; the error names it and the known ones.
pub fn check_pool(cfg: &Config, pool: &str) -> Result<(), String> {
    if cfg.key_pools.iter().any(|p| p.name == pool) {
        return Ok(());
    }
    let known: Vec<&str> = cfg.key_pools.iter().map(|p| p.name.as_str()).collect();
    Err(format!(
        "no key pool named `{pool}` in the configuration's [[key_pools]] (known: {})",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    ))
}

// ---------------------------------------------------------------- import

/// A probe result for one imported key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub line: usize,
    pub id: String,
    pub prefix: String,
    pub verdict: Verdict,
}

/// What `corral keys import` did, for printing and for tests. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub pool: String,
    pub file: PathBuf,
    pub added: usize,
    pub duplicates: usize,
    pub invalid: usize,
    /// Lines that were not added, in line order: (line, what was wrong).
    pub problems: Vec<(usize, String)>,
    /// The backend the new keys were checked against, when `--validate` was given.
    pub validated_by: Option<String>,
    pub checks: Vec<Checked>,
}

impl ImportSummary {
    pub fn render(&self) -> String {
        let mut out = format!(
            "pool `{}` from {}: {} added, {} duplicate, {} invalid\n",
            self.pool,
            self.file.display(),
            self.added,
            self.duplicates,
            self.invalid
        );
        for (line, what) in &self.problems {
            out.push_str(&format!("  line {line}: {what}\n"));
        }
        if let Some(by) = &self.validated_by {
            let count =
                |f: fn(&Verdict) -> bool| self.checks.iter().filter(|c| f(&c.verdict)).count();
            out.push_str(&format!(
                "checked {} new key(s) against {by}: {} ok, {} disabled, {} not checked\n",
                self.checks.len(),
                count(|v| matches!(v, Verdict::Valid { .. })),
                count(|v| matches!(v, Verdict::Rejected { .. })),
                count(|v| matches!(v, Verdict::Unknown { .. })),
            ));
            for c in &self.checks {
                out.push_str(&format!(
                    "  line {} {} {}: {}\n",
                    c.line,
                    c.id,
                    c.prefix,
                    c.verdict.describe()
                ));
            }
        }
        out
    }
}

/// `corral keys import`: parses `file`, stores its new keys in `pool` and, with
/// `validate`, probes each new key and disables the ones the upstream refuses.
pub fn import(
    cfg: &Config,
    store: &Store,
    file: &Path,
    pool: &str,
    validate: bool,
) -> Result<ImportSummary, String> {
    check_pool(cfg, pool)?;
    let target = match validate {
        true => Some(ProbeTarget::for_pool(cfg, pool)?),
        false => None,
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let parsed = parse_keys(&text);
    let stored = store
        .blocking(|c| keys::insert_many(c, pool, &parsed.keys))
        .map_err(db)?;

    let mut problems: Vec<(usize, String)> = parsed
        .lines
        .iter()
        .filter_map(|l| match &l.outcome {
            LineOutcome::Added { .. } => None,
            LineOutcome::Invalid { reason } => Some((l.line, format!("invalid: {reason}"))),
            LineOutcome::Duplicate { prefix, first_line } => {
                Some((l.line, format!("duplicate of line {first_line} ({prefix})")))
            }
        })
        .collect();
    let mut fresh = Vec::new();
    for (key, outcome) in parsed.keys.iter().zip(&stored.outcomes) {
        let prefix = secret_prefix(&key.secret);
        match outcome {
            Insert::Added { id } => fresh.push((key.line, id.clone(), key.secret.clone())),
            Insert::Duplicate { pool: p, .. } if p == pool => {
                problems.push((key.line, format!("already stored ({prefix})")));
            }
            Insert::Duplicate { pool: p, .. } => {
                problems.push((key.line, format!("already stored in pool `{p}` ({prefix})")));
            }
        }
    }
    problems.sort_by_key(|(line, _)| *line);

    let mut checks = Vec::new();
    if let Some(target) = &target {
        let to_probe: Vec<(String, String)> = fresh
            .iter()
            .map(|(_, id, secret)| (id.clone(), secret.clone()))
            .collect();
        let verdicts = probe_all_blocking(target, to_probe)?;
        for ((line, id, secret), (_, verdict)) in fresh.iter().zip(verdicts) {
            if let Verdict::Rejected { .. } = verdict {
                store
                    .blocking(|c| keys::set_state(c, id, false))
                    .map_err(db)?;
            }
            checks.push(Checked {
                line: *line,
                id: id.clone(),
                prefix: secret_prefix(secret),
                verdict,
            });
        }
    }
    Ok(ImportSummary {
        pool: pool.to_string(),
        file: file.to_path_buf(),
        added: stored.added(),
        duplicates: parsed.duplicates() + stored.duplicates(),
        invalid: parsed.invalid(),
        problems,
        validated_by: target.map(|t| t.describe()),
        checks,
    })
}

// ---------------------------------------------------------------- list, enable, disable

/// `corral keys list` as text: stored keys, then `keys_file` keys not stored.
pub fn list(cfg: &Config, store: &Store, pool: Option<&str>) -> Result<String, String> {
    if let Some(p) = pool {
        check_pool(cfg, p)?;
    }
    let rows = store.blocking(|c| keys::list(c, pool)).map_err(db)?;
    let stored: HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut table =
        vec![["ID", "POOL", "PREFIX", "STATE", "CATEGORY", "CREATED"].map(str::to_string)];
    table.extend(rows.iter().map(row_cells));
    let mut seen = HashSet::new();
    for (p, _, secret) in file_keys(cfg, pool) {
        let id = derive_key_id(&secret);
        if stored.contains(&id) || !seen.insert(id.clone()) {
            continue;
        }
        table.push([
            id,
            p,
            secret_prefix(&secret),
            keys::STATE_ACTIVE.into(),
            "-".into(),
            "keys_file".into(),
        ]);
    }
    Ok(aligned(&table))
}

fn row_cells(r: &KeyRow) -> [String; 6] {
    [
        r.id.clone(),
        r.pool.clone(),
        r.prefix.clone(),
        r.state.clone(),
        r.category.clone().unwrap_or_else(|| "-".into()),
        rfc3339(r.created_at),
    ]
}

/// `corral keys enable|disable ID`: the sentence to print, or why it could not be done.
pub fn set_enabled(cfg: &Config, store: &Store, id: &str, enabled: bool) -> Result<String, String> {
    let row = store
        .blocking(|c| keys::set_state(c, id, enabled))
        .map_err(db)?;
    let verb = if enabled { "enable" } else { "disable" };
    match row {
        Some(r) => Ok(format!(
            "{verb}d key {} ({}) of pool `{}`; a running gateway applies this at its next \
             start, or at once through POST /admin/api/keys/{}/{verb}",
            r.id, r.prefix, r.pool, r.id
        )),
        None => match file_keys(cfg, None)
            .into_iter()
            .find(|(_, _, s)| derive_key_id(s) == id)
        {
            Some((pool, path, _)) => Err(format!(
                "key `{id}` of pool `{pool}` comes from keys_file {}, not the database: \
                 import that file with `corral keys import` to {verb} it here, or edit the file",
                path.display()
            )),
            None => Err(format!(
                "no stored key with id `{id}` (see `corral keys list`)"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_aligned_and_pools_are_checked() {
        let text = aligned(&[
            ["ID".to_string(), "POOL".into()],
            ["f-0123".into(), "cloud".into()],
        ]);
        assert_eq!(text, "ID      POOL\nf-0123  cloud\n");
        let cfg = Config::from_toml("[[key_pools]]\nname = \"cloud\"\n").unwrap();
        let err = check_pool(&cfg, "nope").unwrap_err();
        assert!(err.contains("`nope`") && err.contains("cloud"), "{err}");
    }
}
