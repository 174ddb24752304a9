//! Message templates: `{{column}}` or `{{column | filter}}` with the filters
//! `percent` (0.42 → 42%), `dollars` ($12.35), `duration` (ms → 850 ms,
//! 1.2 s, 3.5 min), `round` (two decimals) and `int`. Numbers without a
//! filter print with up to three decimals.

use std::collections::BTreeSet;

use super::condition::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Plain,
    Percent,
    Dollars,
    Duration,
    Round,
    Int,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Field(String, Filter),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template: {0}")]
pub struct TemplateError(pub String);

impl Template {
    pub fn parse(s: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| TemplateError(format!("unclosed {{{{ in {s:?}")))?;
            let inner = after[..close].trim();
            let (name, filter) = match inner.split_once('|') {
                Some((n, f)) => (n.trim(), f.trim()),
                None => (inner, ""),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                return Err(TemplateError(format!("bad field {inner:?}")));
            }
            let filter = match filter {
                "" => Filter::Plain,
                "percent" => Filter::Percent,
                "dollars" => Filter::Dollars,
                "duration" => Filter::Duration,
                "round" => Filter::Round,
                "int" => Filter::Int,
                other => {
                    return Err(TemplateError(format!(
                        "unknown filter {other:?} (percent, dollars, duration, round, int)"
                    )));
                }
            };
            parts.push(Part::Field(name.to_string(), filter));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// Columns the template reads.
    pub fn columns(&self) -> BTreeSet<String> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Field(n, _) => Some(n.clone()),
                Part::Text(_) => None,
            })
            .collect()
    }

    pub fn render(&self, get: &dyn Fn(&str) -> Value) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field(n, f) => out.push_str(&format_value(&get(n), *f)),
            }
        }
        out
    }
}

/// Up to `decimals` decimals, trailing zeros dropped.
fn trimmed(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `0.4213` → `42.1%`; below one percent two significant digits
/// (`0.000224` → `0.022%`) so that a small share does not read as none.
pub fn percent(v: f64) -> String {
    let pct = v * 100.0;
    if pct != 0.0 && pct.abs() < 1.0 && pct.is_finite() {
        let decimals = (1.0 - pct.abs().log10().floor()).clamp(1.0, 6.0) as usize;
        return format!("{}%", trimmed(pct, decimals));
    }
    format!("{}%", trimmed(pct, 1))
}

pub fn dollars(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.01 {
        return format!("${}", trimmed(v, 6));
    }
    let cents = (v * 100.0).round() / 100.0;
    let whole = cents.trunc().abs() as u64;
    let mut grouped = String::new();
    for (i, c) in whole.to_string().chars().rev().enumerate() {
        if i > 0 && i % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let grouped: String = grouped.chars().rev().collect();
    let sign = if cents < 0.0 { "-" } else { "" };
    format!(
        "{sign}${grouped}.{:02}",
        ((cents.abs().fract()) * 100.0).round() as u64
    )
}

pub fn duration_ms(v: f64) -> String {
    if v.abs() < 1000.0 {
        format!("{} ms", trimmed(v, 1))
    } else if v.abs() < 60_000.0 {
        format!("{} s", trimmed(v / 1000.0, 2))
    } else if v.abs() < 3_600_000.0 {
        format!("{} min", trimmed(v / 60_000.0, 1))
    } else {
        format!("{} h", trimmed(v / 3_600_000.0, 1))
    }
}

pub fn format_value(v: &Value, f: Filter) -> String {
    match v {
        Value::Null => "n/a".into(),
        Value::Text(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match f {
            Filter::Plain => trimmed(*n, 3),
            Filter::Percent => percent(*n),
            Filter::Dollars => dollars(*n),
            Filter::Duration => duration_ms(*n),
            Filter::Round => trimmed(*n, 2),
            Filter::Int => format!("{:.0}", n.round()),
        },
    }
}
