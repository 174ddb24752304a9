//! Rule files: `rules/*.yaml` (or `.yml`), each `{ rules: [ ... ] }`.
//!
//! Loading parses every file and validates each rule on its own (name,
//! durations, severity, condition, message template); `check` then plans
//! every rule's SQL against the real schema and checks that the condition
//! and the template name columns the query returns and that the notifiers
//! exist. Every error names the file, the rule and the reason.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::condition::Condition;
use super::template::Template;
use crate::engine::QueryEngine;

/// Columns a rule's query may return that are not labels.
pub const VALUE: &str = "value";
pub const SAVINGS: &str = "savings_usd_month";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    #[serde(default)]
    description: String,
    every: Option<String>,
    #[serde(rename = "for")]
    for_: Option<String>,
    severity: Option<Severity>,
    sql: String,
    condition: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    message: String,
    #[serde(default)]
    notify: Vec<String>,
    repeat_interval: Option<String>,
    /// Columns shown in messages that do not identify the subject (the
    /// figures that change from one evaluation to the next).
    #[serde(default)]
    details: Vec<String>,
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub description: String,
    pub every: Duration,
    pub for_: Duration,
    pub severity: Severity,
    pub sql: String,
    /// `None`: every row is a firing subject.
    pub condition: Option<Condition>,
    pub labels: BTreeMap<String, String>,
    pub message: Template,
    pub notify: Vec<String>,
    pub repeat_interval: Duration,
    /// Result columns that are not labels (besides `value` and `savings_usd_month`).
    pub details: Vec<String>,
    pub file: PathBuf,
}

/// What is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}{reason}", file.display(), rule.as_ref().map(|r| format!("rule {r}: ")).unwrap_or_default())]
pub struct RuleError {
    pub file: PathBuf,
    pub rule: Option<String>,
    pub reason: String,
}

const MAX_FILE_BYTES: u64 = 1 << 20;
pub const DEFAULT_EVERY: Duration = Duration::from_secs(300);
pub const DEFAULT_REPEAT: Duration = Duration::from_secs(4 * 3600);

fn duration(field: &str, v: Option<&str>, default: Duration) -> Result<Duration, String> {
    match v {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s.trim())
            .map_err(|e| format!("{field}: {s:?} is not a duration like 30s, 5m or 4h ({e})")),
    }
}

fn validate(spec: RuleSpec, file: &Path) -> Result<Rule, String> {
    let name_ok = !spec.name.is_empty()
        && spec.name.len() <= 100
        && spec
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !name_ok {
        return Err("name must be 1 to 100 of a-z, 0-9 and _".into());
    }
    let every = duration("every", spec.every.as_deref(), DEFAULT_EVERY)?;
    if every < Duration::from_secs(1) {
        return Err("every must be at least 1s".into());
    }
    let for_ = duration("for", spec.for_.as_deref(), Duration::ZERO)?;
    let repeat_interval = duration(
        "repeat_interval",
        spec.repeat_interval.as_deref(),
        DEFAULT_REPEAT,
    )?;
    if repeat_interval < Duration::from_secs(60) {
        return Err("repeat_interval must be at least 1m".into());
    }
    if spec.sql.trim().is_empty() {
        return Err("sql is empty".into());
    }
    crate::safety::check_sql(&spec.sql).map_err(|e| format!("sql: {e}"))?;
    let condition = spec
        .condition
        .as_deref()
        .filter(|c| !c.trim().is_empty())
        .map(Condition::parse)
        .transpose()
        .map_err(|e| e.to_string())?;
    let message = Template::parse(&spec.message).map_err(|e| format!("message: {e}"))?;
    for k in spec.labels.keys() {
        if k == VALUE || k == SAVINGS || k.is_empty() {
            return Err(format!("label name {k:?} is reserved or empty"));
        }
    }
    Ok(Rule {
        name: spec.name,
        description: spec.description.trim().to_string(),
        every,
        for_,
        severity: spec.severity.unwrap_or(Severity::Warning),
        sql: spec.sql,
        condition,
        labels: spec.labels,
        message,
        notify: spec.notify,
        repeat_interval,
        details: spec.details,
        file: file.to_path_buf(),
    })
}

/// Parses one file's text.
pub fn parse_file(file: &Path, text: &str) -> Result<Vec<Rule>, Vec<RuleError>> {
    let err = |rule: Option<&str>, reason: String| RuleError {
        file: file.to_path_buf(),
        rule: rule.map(str::to_string),
        reason,
    };
    let parsed: RuleFile =
        serde_saphyr::from_str(text).map_err(|e| vec![err(None, e.to_string())])?;
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    for spec in parsed.rules {
        let name = spec.name.clone();
        match validate(spec, file) {
            Ok(r) => rules.push(r),
            Err(reason) => errors.push(err(Some(&name), reason)),
        }
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

/// Every rule file of a directory (sorted by name); all errors at once.
pub fn load_dir(dir: &Path) -> Result<Vec<Rule>, Vec<RuleError>> {
    let dir_err = |reason: String| {
        vec![RuleError {
            file: dir.to_path_buf(),
            rule: None,
            reason,
        }]
    };
    let entries = std::fs::read_dir(dir)
        .map_err(|e| dir_err(format!("cannot read the rules directory: {e}")))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    paths.sort();
    let mut rules: Vec<Rule> = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let text = match std::fs::metadata(&path) {
            Ok(m) if m.len() > MAX_FILE_BYTES => {
                errors.push(RuleError {
                    file: path.clone(),
                    rule: None,
                    reason: format!("larger than {MAX_FILE_BYTES} bytes"),
                });
                continue;
            }
            _ => match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(RuleError {
                        file: path.clone(),
                        rule: None,
                        reason: format!("cannot read: {e}"),
                    });
                    continue;
                }
            },
        };
        match parse_file(&path, &text) {
            Ok(rs) => rules.extend(rs),
            Err(es) => errors.extend(es),
        }
    }
    let mut seen = BTreeSet::new();
    for r in &rules {
        if !seen.insert(r.name.clone()) {
            errors.push(RuleError {
                file: r.file.clone(),
                rule: Some(r.name.clone()),
                reason: "another rule has the same name".into(),
            });
        }
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

/// Plans every rule against the real schema and checks columns and notifiers.
pub async fn check(engine: &QueryEngine, rules: &[Rule], notifiers: &[String]) -> Vec<RuleError> {
    let mut errors = Vec::new();
    for r in rules {
        let err = |reason: String| RuleError {
            file: r.file.clone(),
            rule: Some(r.name.clone()),
            reason,
        };
        let columns: BTreeSet<String> = match engine.plan_columns(&r.sql).await {
            Ok(c) => c.into_iter().collect(),
            Err(e) => {
                errors.push(err(format!("sql: {e}")));
                continue;
            }
        };
        if let Some(c) = &r.condition {
            for col in c.columns() {
                if !columns.contains(&col) {
                    errors.push(err(format!(
                        "condition reads {col:?}, which the query does not return ({})",
                        list(&columns)
                    )));
                }
            }
        }
        for col in r.message.columns() {
            if !columns.contains(&col) {
                errors.push(err(format!(
                    "message uses {{{{{col}}}}}, which the query does not return ({})",
                    list(&columns)
                )));
            }
        }
        for col in &r.details {
            if !columns.contains(col) {
                errors.push(err(format!(
                    "details names {col:?}, which the query does not return ({})",
                    list(&columns)
                )));
            }
        }
        for n in &r.notify {
            if !notifiers.contains(n) {
                errors.push(err(format!(
                    "notify names {n:?}, which is not a configured notifier ({})",
                    if notifiers.is_empty() {
                        "none configured".to_string()
                    } else {
                        notifiers.join(", ")
                    }
                )));
            }
        }
    }
    errors
}

fn list(columns: &BTreeSet<String>) -> String {
    format!(
        "columns: {}",
        columns.iter().cloned().collect::<Vec<_>>().join(", ")
    )
}
