//! Parsing of upstream key files and `corral keys import` input (secrets never logged), and
//! reading the configured `keys_file`s.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use crate::config::Config;

/// Shortest and longest secret accepted; anything outside is a typo or a pasted paragraph.
const MIN_KEY_LEN: usize = 8;
const MAX_KEY_LEN: usize = 512;

/// One key found in the input. `Debug` shows only a prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct ImportedKey {
    /// 1-based line number in the input.
    pub line: usize,
    pub secret: String,
}

impl fmt::Debug for ImportedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportedKey")
            .field("line", &self.line)
            .field("secret", &secret_prefix(&self.secret))
            .finish()
    }
}

/// What happened to one non-blank, non-comment line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineOutcome {
    Added {
        prefix: String,
    },
    /// The same key already appeared on `first_line`.
    Duplicate {
        prefix: String,
        first_line: usize,
    },
    Invalid {
        reason: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineReport {
    pub line: usize,
    pub outcome: LineOutcome,
}

/// Unique keys in input order plus a verdict for every line that was not blank or a comment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub keys: Vec<ImportedKey>,
    pub lines: Vec<LineReport>,
}

impl ImportReport {
    pub fn added(&self) -> usize {
        self.keys.len()
    }

    pub fn duplicates(&self) -> usize {
        self.count(|o| matches!(o, LineOutcome::Duplicate { .. }))
    }

    pub fn invalid(&self) -> usize {
        self.count(|o| matches!(o, LineOutcome::Invalid { .. }))
    }

    fn count(&self, f: impl Fn(&LineOutcome) -> bool) -> usize {
        self.lines.iter().filter(|l| f(&l.outcome)).count()
    }
}

/// Parses one key a line: `#` comments, blank lines, CRLF, a leading BOM, and the
/// `email----password----session----key` export format (only the key is kept; the other
/// fields are dropped here and never reach a log).
pub fn parse_keys(text: &str) -> ImportReport {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut report = ImportReport::default();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let outcome = match extract_key(trimmed) {
            Err(reason) => LineOutcome::Invalid { reason },
            Ok(key) => match seen.get(key) {
                Some(&first_line) => LineOutcome::Duplicate {
                    prefix: secret_prefix(key),
                    first_line,
                },
                None => {
                    seen.insert(key, line);
                    report.keys.push(ImportedKey {
                        line,
                        secret: key.to_string(),
                    });
                    LineOutcome::Added {
                        prefix: secret_prefix(key),
                    }
                }
            },
        };
        report.lines.push(LineReport { line, outcome });
    }
    report
}

fn extract_key(line: &str) -> Result<&str, &'static str> {
    let key = if line.contains("----") {
        let fields: Vec<&str> = line.split("----").collect();
        if fields.len() != 4 {
            return Err("expected email----password----session----key");
        }
        fields[3].trim()
    } else {
        line
    };
    validate_key(key)?;
    Ok(key)
}

fn validate_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("empty key");
    }
    if key.chars().any(|c| c.is_whitespace()) {
        return Err("key contains whitespace");
    }
    if !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err("key contains characters other than printable ASCII");
    }
    if key.len() < MIN_KEY_LEN {
        return Err("key is too short");
    }
    if key.len() > MAX_KEY_LEN {
        return Err("key is too long");
    }
    Ok(())
}

/// The part of a secret safe to show: at most 7 characters and under half of a short key.
pub fn secret_prefix(secret: &str) -> String {
    let n = (secret.chars().count() / 2).saturating_sub(1).min(7);
    let head: String = secret.chars().take(n).collect();
    format!("{head}…")
}

/// Keys of the configured `keys_file`s, of one pool or all: (pool, file, secret).
/// Reads files: call it where blocking is fine.
pub fn file_keys(cfg: &Config, pool: Option<&str>) -> Vec<(String, PathBuf, String)> {
    let mut out = Vec::new();
    for p in &cfg.key_pools {
        if pool.is_some_and(|name| name != p.name) {
            continue;
        }
        let Some(path) = &p.keys_file else { continue };
        // An unreadable file is the gateway's to report at start; the list shows the rest.
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        for k in parse_keys(&text).keys {
            out.push((p.name.clone(), path.clone(), k.secret));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "sk-ab12cd34ef56gh78";
    const K2: &str = "0123456789abcdef.ZYXWVUTSRQPONMLKJ";

    fn outcomes(r: &ImportReport) -> Vec<(usize, &LineOutcome)> {
        r.lines.iter().map(|l| (l.line, &l.outcome)).collect()
    }

    #[test]
    fn plain_lines_comments_and_blanks() {
        let r = parse_keys(&format!("# pool keys\n\n{K1}\n   \n  {K2}  \n#{K1}\n"));
        let secrets: Vec<_> = r.keys.iter().map(|k| k.secret.as_str()).collect();
        assert_eq!(secrets, [K1, K2]);
        assert_eq!(r.keys[0].line, 3);
        assert_eq!(r.keys[1].line, 5);
        assert_eq!(r.lines.len(), 2, "blank and comment lines are not reported");
    }

    #[test]
    fn empty_input_has_nothing() {
        assert_eq!(parse_keys(""), ImportReport::default());
        assert_eq!(parse_keys("\n\n\r\n").added(), 0);
    }

    #[test]
    fn crlf_and_bom_are_stripped() {
        let r = parse_keys(&format!("\u{feff}{K1}\r\n{K2}\r\n"));
        assert_eq!(r.keys[0].secret, K1);
        assert_eq!(r.keys[1].secret, K2);
        assert_eq!(r.invalid(), 0);
    }

    #[test]
    fn duplicates_name_the_first_line() {
        let r = parse_keys(&format!("{K1}\n{K2}\n{K1}\n"));
        assert_eq!(r.added(), 2);
        assert_eq!(r.duplicates(), 1);
        assert_eq!(
            outcomes(&r)[2],
            (
                3,
                &LineOutcome::Duplicate {
                    prefix: "sk-ab12…".into(),
                    first_line: 1
                }
            )
        );
    }

    #[test]
    fn four_field_format_keeps_only_the_key() {
        let line = format!("me@example.com----hunter2pass----sess-abcdef----{K2}");
        let r = parse_keys(&format!("{line}\r\n{K2}\n"));
        assert_eq!(r.keys.len(), 1);
        assert_eq!(r.keys[0].secret, K2);
        assert_eq!(r.duplicates(), 1, "the same key on its own is a duplicate");
        let shown = format!("{r:?}");
        for secret in ["hunter2pass", "sess-abcdef", "me@example.com", K2] {
            assert!(!shown.contains(secret), "{secret} leaked into {shown}");
        }
    }

    #[test]
    fn garbage_is_invalid_with_its_line() {
        let r = parse_keys(&format!(
            "{K1}\nnot a key at all\nshort\na----b----c\n{}\nkey\u{e9}with\u{e9}accents\n----\n",
            "x".repeat(600)
        ));
        assert_eq!(r.added(), 1);
        let invalid: Vec<usize> = r
            .lines
            .iter()
            .filter(|l| matches!(l.outcome, LineOutcome::Invalid { .. }))
            .map(|l| l.line)
            .collect();
        assert_eq!(invalid, [2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn prefix_never_shows_a_short_key_whole() {
        assert_eq!(secret_prefix("sk-ab12cd34ef56gh78"), "sk-ab12…");
        assert_eq!(secret_prefix("abcdefgh"), "abc…");
        assert_eq!(secret_prefix(""), "…");
    }
}
