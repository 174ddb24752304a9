//! A TraceQL subset: parser and translation to SQL over `spans`.
//!
//! Supported: spanset filters `{ ... }` (empty matches every span) joined
//! with `&&` (the trace has both) and `||` (either), parentheses; inside a
//! filter `&&`, `||`, `!`, parentheses and comparisons `= != > >= < <= =~ !~`
//! between an attribute and a literal. Attributes: `span.x`, `resource.x`,
//! unscoped `.x`, and the intrinsics `name`, `status`, `statusMessage`,
//! `kind`, `duration`, `rootName`, `rootServiceName`, `traceDuration` (also
//! in their `span:`/`trace:` forms). Literals: strings (`"…"` or `` `…` ``),
//! integers, floats, durations (`100ms`, `1.5s`), `true`/`false`, status
//! (`ok`, `error`, `unset`) and kind (`server`, `client`, …) keywords.
//! Regular expressions are fully anchored, as in Tempo. Anything else
//! (pipelines, aggregates, structural operators, arithmetic) is refused
//! with what is not supported.

use std::fmt::Write as _;

use super::sql_string;

#[derive(Debug, Clone, PartialEq)]
pub enum SpansetExpr {
    /// `{ cond }`; `None` for `{}`.
    Filter(Option<FieldExpr>),
    And(Box<SpansetExpr>, Box<SpansetExpr>),
    Or(Box<SpansetExpr>, Box<SpansetExpr>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum FieldExpr {
    And(Box<FieldExpr>, Box<FieldExpr>),
    Or(Box<FieldExpr>, Box<FieldExpr>),
    Not(Box<FieldExpr>),
    Cmp(Attribute, Op, Static),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intrinsic {
    Name,
    Status,
    StatusMessage,
    Kind,
    Duration,
    RootName,
    RootServiceName,
    TraceDuration,
}

impl Intrinsic {
    /// Trace-level intrinsics need the per-trace summary.
    pub fn is_trace_level(self) -> bool {
        matches!(
            self,
            Intrinsic::RootName | Intrinsic::RootServiceName | Intrinsic::TraceDuration
        )
    }

    pub const ALL: [(&'static str, Intrinsic); 8] = [
        ("name", Intrinsic::Name),
        ("status", Intrinsic::Status),
        ("statusMessage", Intrinsic::StatusMessage),
        ("kind", Intrinsic::Kind),
        ("duration", Intrinsic::Duration),
        ("rootName", Intrinsic::RootName),
        ("rootServiceName", Intrinsic::RootServiceName),
        ("traceDuration", Intrinsic::TraceDuration),
    ];

    fn from_name(name: &str) -> Option<Intrinsic> {
        let name = match name {
            "span:name" => "name",
            "span:status" => "status",
            "span:statusMessage" => "statusMessage",
            "span:kind" => "kind",
            "span:duration" => "duration",
            "trace:rootName" => "rootName",
            "trace:rootService" => "rootServiceName",
            "trace:duration" => "traceDuration",
            other => other,
        };
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, i)| *i)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    Span(String),
    Resource(String),
    /// Unscoped `.x`: the span's attribute, else the resource's.
    Any(String),
    Intrinsic(Intrinsic),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Re,
    NotRe,
}

impl Op {
    fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Re | Op::NotRe => "",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Static {
    Str(String),
    Int(i64),
    Float(f64),
    /// Nanoseconds.
    Duration(i64),
    Bool(bool),
    /// `ok`, `error`, `unset`.
    Status(String),
    /// `server`, `client`, `producer`, `consumer`, `internal`, `unspecified`.
    Kind(String),
}

/// Why a query was refused; the API answers 400 with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TraceQL: {message} (at offset {offset})")]
pub struct ParseError {
    pub offset: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    AndAnd,
    OrOr,
    Not,
    Op(Op),
    Str(String),
    Num(String),
    Ident(String),
    /// Something we recognise but do not support (`|`, `>>`, `~`, arithmetic…).
    Unsupported(&'static str),
}

const MAX_QUERY_LEN: usize = 16 * 1024;
const MAX_DEPTH: usize = 64;

/// The string literal opening at `start` (`"…"` with escapes, or `` `…` ``
/// raw) and the offset just past it.
fn read_string(q: &str, start: usize) -> Result<(String, usize), ParseError> {
    let b = q.as_bytes();
    let quote = b[start];
    let err = |offset: usize, message: String| ParseError { offset, message };
    let mut s = String::new();
    let mut j = start + 1;
    loop {
        let Some(&d) = b.get(j) else {
            return Err(err(start, "unterminated string".into()));
        };
        if d == quote {
            return Ok((s, j + 1));
        }
        if d == b'\\' && quote == b'"' {
            let Some(&e) = b.get(j + 1) else {
                return Err(err(start, "unterminated string".into()));
            };
            s.push(match e {
                b'n' => '\n',
                b't' => '\t',
                b'\\' => '\\',
                b'"' => '"',
                other => return Err(err(j, format!("unknown escape \\{}", other as char))),
            });
            j += 2;
            continue;
        }
        // One whole UTF-8 character.
        let len = q[j..].chars().next().map_or(1, char::len_utf8);
        s.push_str(&q[j..j + len]);
        j += len;
    }
}

fn lex(q: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    if q.len() > MAX_QUERY_LEN {
        return Err(ParseError {
            offset: MAX_QUERY_LEN,
            message: format!("query longer than {MAX_QUERY_LEN} bytes"),
        });
    }
    let b = q.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |offset: usize, message: String| ParseError { offset, message };
    while i < b.len() {
        let c = b[i];
        let at = i;
        let two = b.get(i..i + 2);
        let tok = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'{' => Tok::LBrace,
            b'}' => Tok::RBrace,
            b'(' => Tok::LParen,
            b')' => Tok::RParen,
            _ if two == Some(b"&&") => Tok::AndAnd,
            _ if two == Some(b"||") => Tok::OrOr,
            _ if two == Some(b"!=") => Tok::Op(Op::Ne),
            _ if two == Some(b"!~") => Tok::Op(Op::NotRe),
            _ if two == Some(b"=~") => Tok::Op(Op::Re),
            _ if two == Some(b">=") => Tok::Op(Op::Ge),
            _ if two == Some(b"<=") => Tok::Op(Op::Le),
            _ if two == Some(b">>") || two == Some(b"<<") => {
                Tok::Unsupported("structural operators (>>, <<, >, <, ~)")
            }
            b'=' => Tok::Op(Op::Eq),
            b'>' => Tok::Op(Op::Gt),
            b'<' => Tok::Op(Op::Lt),
            b'!' => Tok::Not,
            b'|' => Tok::Unsupported("pipelines (| count(), | select(), …)"),
            b'~' => Tok::Unsupported("structural operators (>>, <<, >, <, ~)"),
            b'+' | b'*' | b'/' | b'%' | b'^' => Tok::Unsupported("arithmetic"),
            b'&' => Tok::Unsupported("a single '&' (use &&)"),
            b'"' | b'`' => {
                let (text, next) = read_string(q, i)?;
                out.push((at, Tok::Str(text)));
                i = next;
                continue;
            }
            b'0'..=b'9' | b'-' => {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'.' || b[j] == b'_')
                {
                    j += 1;
                }
                // `µs` is two bytes.
                if q[j..].starts_with("µs") {
                    j += "µs".len();
                }
                if c == b'-' && j == i + 1 {
                    return Err(err(at, "arithmetic is not supported".into()));
                }
                out.push((at, Tok::Num(q[i..j].to_string())));
                i = j;
                continue;
            }
            b'.' | b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let mut j = i + 1;
                while j < b.len()
                    && (b[j].is_ascii_alphanumeric()
                        || matches!(b[j], b'.' | b'_' | b'-' | b'/' | b':'))
                {
                    j += 1;
                }
                // A quoted attribute name: `span."my attr"`, `."x"`.
                if b[j - 1] == b'.' && b.get(j) == Some(&b'"') {
                    let (name, next) = read_string(q, j)?;
                    out.push((at, Tok::Ident(format!("{}{name}", &q[i..j]))));
                    i = next;
                    continue;
                }
                out.push((at, Tok::Ident(q[i..j].to_string())));
                i = j;
                continue;
            }
            other => {
                return Err(err(at, format!("unexpected character {:?}", other as char)));
            }
        };
        i += match tok {
            Tok::LBrace | Tok::RBrace | Tok::LParen | Tok::RParen | Tok::Not => 1,
            Tok::Op(Op::Eq | Op::Gt | Op::Lt) => 1,
            Tok::Unsupported(_)
                if matches!(c, b'|' | b'~' | b'+' | b'*' | b'/' | b'%' | b'^' | b'&') =>
            {
                1
            }
            _ => 2,
        };
        out.push((at, tok));
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn offset(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(o, _)| *o)
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            offset: self.offset(),
            message: message.into(),
        })
    }

    fn unsupported_here<T>(&self) -> Result<T, ParseError> {
        match self.peek() {
            Some(Tok::Unsupported(what)) => self.fail(format!("{what} are not supported")),
            Some(t) => self.fail(format!("unexpected {}", describe(t))),
            None => self.fail("unexpected end of query"),
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.fail(format!("nesting deeper than {MAX_DEPTH}"));
        }
        Ok(())
    }

    fn spanset_or(&mut self) -> Result<SpansetExpr, ParseError> {
        let mut left = self.spanset_and()?;
        while self.peek() == Some(&Tok::OrOr) {
            self.pos += 1;
            let right = self.spanset_and()?;
            left = SpansetExpr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn spanset_and(&mut self) -> Result<SpansetExpr, ParseError> {
        let mut left = self.spanset_atom()?;
        loop {
            match self.peek() {
                Some(Tok::AndAnd) => {
                    self.pos += 1;
                    let right = self.spanset_atom()?;
                    left = SpansetExpr::And(Box::new(left), Box::new(right));
                }
                Some(Tok::Op(Op::Gt | Op::Lt)) => {
                    return self.fail("structural operators (>>, <<, >, <, ~) are not supported");
                }
                _ => return Ok(left),
            }
        }
    }

    fn spanset_atom(&mut self) -> Result<SpansetExpr, ParseError> {
        self.enter()?;
        let out = match self.peek() {
            Some(Tok::LBrace) => {
                self.pos += 1;
                if self.peek() == Some(&Tok::RBrace) {
                    self.pos += 1;
                    SpansetExpr::Filter(None)
                } else {
                    let e = self.field_or()?;
                    if self.peek() != Some(&Tok::RBrace) {
                        return match self.peek() {
                            Some(Tok::Unsupported(_)) | None => self.unsupported_here(),
                            Some(t) => self
                                .fail(format!("expected '}}' or && / ||, found {}", describe(t))),
                        };
                    }
                    self.pos += 1;
                    SpansetExpr::Filter(Some(e))
                }
            }
            Some(Tok::LParen) => {
                self.pos += 1;
                let e = self.spanset_or()?;
                if self.peek() != Some(&Tok::RParen) {
                    return self.fail("expected ')'");
                }
                self.pos += 1;
                e
            }
            None => return self.fail("expected a spanset filter like { span.http.route = \"/\" }"),
            _ => return self.fail("expected '{' to start a spanset filter"),
        };
        self.depth -= 1;
        Ok(out)
    }

    fn field_or(&mut self) -> Result<FieldExpr, ParseError> {
        let mut left = self.field_and()?;
        while self.peek() == Some(&Tok::OrOr) {
            self.pos += 1;
            let right = self.field_and()?;
            left = FieldExpr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn field_and(&mut self) -> Result<FieldExpr, ParseError> {
        let mut left = self.field_unary()?;
        while self.peek() == Some(&Tok::AndAnd) {
            self.pos += 1;
            let right = self.field_unary()?;
            left = FieldExpr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn field_unary(&mut self) -> Result<FieldExpr, ParseError> {
        self.enter()?;
        let out = match self.peek() {
            Some(Tok::Not) => {
                self.pos += 1;
                FieldExpr::Not(Box::new(self.field_unary()?))
            }
            Some(Tok::LParen) => {
                self.pos += 1;
                let e = self.field_or()?;
                if self.peek() != Some(&Tok::RParen) {
                    return self.fail("expected ')'");
                }
                self.pos += 1;
                e
            }
            Some(Tok::Ident(_)) => self.comparison()?,
            _ => return self.unsupported_here(),
        };
        self.depth -= 1;
        Ok(out)
    }

    fn comparison(&mut self) -> Result<FieldExpr, ParseError> {
        let Some(Tok::Ident(name)) = self.peek().cloned() else {
            return self.unsupported_here();
        };
        let attr = parse_attribute(&name).map_err(|message| ParseError {
            offset: self.offset(),
            message,
        })?;
        self.pos += 1;
        let op = match self.peek() {
            Some(Tok::Op(op)) => *op,
            Some(Tok::LParen) => {
                return self.fail(format!("functions like {name}() are not supported"));
            }
            Some(Tok::RBrace | Tok::AndAnd | Tok::OrOr | Tok::RParen) | None => {
                return self.fail(format!(
                    "{name} needs a comparison (existence checks are not supported)"
                ));
            }
            _ => return self.unsupported_here(),
        };
        self.pos += 1;
        let value = match self.peek().cloned() {
            Some(Tok::Str(s)) => Static::Str(s),
            Some(Tok::Num(n)) => parse_number(&n).map_err(|message| ParseError {
                offset: self.offset(),
                message,
            })?,
            Some(Tok::Ident(word)) => match word.as_str() {
                "true" => Static::Bool(true),
                "false" => Static::Bool(false),
                "ok" | "error" | "unset" => Static::Status(word),
                "server" | "client" | "producer" | "consumer" | "internal" | "unspecified" => {
                    Static::Kind(word)
                }
                "nil" => return self.fail("nil is not supported"),
                _ => {
                    return self.fail(format!(
                        "comparing two attributes is not supported ({name} with {word})"
                    ));
                }
            },
            _ => return self.unsupported_here(),
        };
        self.pos += 1;
        check_types(&attr, op, &value).map_err(|message| ParseError {
            offset: self.offset(),
            message,
        })?;
        Ok(FieldExpr::Cmp(attr, op, value))
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::LBrace => "'{'".into(),
        Tok::RBrace => "'}'".into(),
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::AndAnd => "'&&'".into(),
        Tok::OrOr => "'||'".into(),
        Tok::Not => "'!'".into(),
        Tok::Op(op) => format!("operator {op:?}"),
        Tok::Str(s) => format!("string {s:?}"),
        Tok::Num(n) => format!("number {n}"),
        Tok::Ident(i) => format!("{i:?}"),
        Tok::Unsupported(what) => format!("{what} (not supported)"),
    }
}

/// `span.x`, `resource.x`, `.x`, or an intrinsic.
pub fn parse_attribute(name: &str) -> Result<Attribute, String> {
    let scoped = |rest: &str, what: &str| {
        if rest.is_empty() {
            Err(format!("{what} needs an attribute name"))
        } else {
            Ok(rest.to_string())
        }
    };
    if let Some(rest) = name.strip_prefix("span.") {
        return scoped(rest, "span.").map(Attribute::Span);
    }
    if let Some(rest) = name.strip_prefix("resource.") {
        return scoped(rest, "resource.").map(Attribute::Resource);
    }
    if let Some(rest) = name.strip_prefix('.') {
        return scoped(rest, ".").map(Attribute::Any);
    }
    if let Some(i) = Intrinsic::from_name(name) {
        return Ok(Attribute::Intrinsic(i));
    }
    for scope in ["event.", "link.", "instrumentation.", "parent."] {
        if name.starts_with(scope) {
            return Err(format!(
                "the {} scope is not supported",
                scope.trim_end_matches('.')
            ));
        }
    }
    Err(format!(
        "unknown attribute {name:?} (use span.x, resource.x, .x or an intrinsic: name, status, kind, duration, rootName, rootServiceName, traceDuration)"
    ))
}

/// A duration literal (`100ms`, `1.5s`, `2m`) in nanoseconds.
pub fn parse_duration_literal(n: &str) -> Result<i64, String> {
    match parse_number(n.trim()) {
        Ok(Static::Duration(ns)) => Ok(ns),
        _ => Err(format!("{n:?} is not a duration like 100ms, 1.5s or 2m")),
    }
}

fn parse_number(n: &str) -> Result<Static, String> {
    if let Ok(i) = n.parse::<i64>() {
        return Ok(Static::Int(i));
    }
    if let Ok(f) = n.parse::<f64>()
        && f.is_finite()
    {
        return Ok(Static::Float(f));
    }
    let split = n
        .find(|c: char| c.is_ascii_alphabetic() || c == 'µ')
        .ok_or_else(|| format!("bad number {n:?}"))?;
    let (num, unit) = n.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("bad duration {n:?}"))?;
    let scale = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return Err(format!("bad duration unit in {n:?} (ns, us, ms, s, m, h)")),
    };
    let nanos = value * scale;
    if !nanos.is_finite() || nanos.abs() > i64::MAX as f64 {
        return Err(format!("duration {n:?} is out of range"));
    }
    Ok(Static::Duration(nanos.round() as i64))
}

fn check_types(attr: &Attribute, op: Op, value: &Static) -> Result<(), String> {
    let is_regex = matches!(op, Op::Re | Op::NotRe);
    let equality = matches!(op, Op::Eq | Op::Ne);
    match (attr, value) {
        (_, Static::Str(_)) if is_regex => Ok(()),
        (_, _) if is_regex => Err("=~ and !~ need a string".into()),
        (Attribute::Intrinsic(Intrinsic::Duration | Intrinsic::TraceDuration), Static::Duration(_)) => Ok(()),
        (Attribute::Intrinsic(Intrinsic::Duration | Intrinsic::TraceDuration), _) => {
            Err("duration and traceDuration compare with a duration like 100ms".into())
        }
        (_, Static::Duration(_)) => Err("only duration and traceDuration compare with durations".into()),
        (Attribute::Intrinsic(Intrinsic::Status), Static::Status(_)) if equality => Ok(()),
        (Attribute::Intrinsic(Intrinsic::Status), _) => {
            Err("status compares with = or != to ok, error or unset".into())
        }
        (Attribute::Intrinsic(Intrinsic::Kind), Static::Kind(_)) if equality => Ok(()),
        (Attribute::Intrinsic(Intrinsic::Kind), _) => {
            Err("kind compares with = or != to server, client, producer, consumer, internal or unspecified".into())
        }
        (_, Static::Status(_) | Static::Kind(_)) => {
            Err("status and kind keywords compare only with status and kind".into())
        }
        (_, Static::Bool(_)) if !equality => Err("booleans compare only with = or !=".into()),
        _ => Ok(()),
    }
}

/// Parses a TraceQL query.
pub fn parse(query: &str) -> Result<SpansetExpr, ParseError> {
    let toks = lex(query)?;
    let mut p = Parser {
        toks,
        pos: 0,
        end: query.len(),
        depth: 0,
    };
    let e = p.spanset_or()?;
    if p.pos < p.toks.len() {
        return p.unsupported_here();
    }
    Ok(e)
}

impl SpansetExpr {
    /// The spanset filters, left to right.
    pub fn filters(&self) -> Vec<&Option<FieldExpr>> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            match e {
                SpansetExpr::Filter(f) => out.push(f),
                SpansetExpr::And(a, b) | SpansetExpr::Or(a, b) => {
                    stack.push(b);
                    stack.push(a);
                }
            }
        }
        out
    }

    /// The trace condition over the per-filter flags `m0`, `m1`, … (in the
    /// order of [`Self::filters`]). A chain of one operator is written flat,
    /// `(m0 AND m1 AND m2)`: a parenthesis per operator would run into the
    /// SQL parser's nesting limit of 50 at about that many filters.
    pub fn combine_sql(&self, flag: &dyn Fn(usize) -> String) -> String {
        fn go(
            e: &SpansetExpr,
            within: Option<&str>,
            next: &mut usize,
            flag: &dyn Fn(usize) -> String,
            out: &mut String,
        ) {
            let (op, a, b) = match e {
                SpansetExpr::Filter(_) => {
                    out.push_str(&flag(*next));
                    *next += 1;
                    return;
                }
                SpansetExpr::And(a, b) => ("AND", a, b),
                SpansetExpr::Or(a, b) => ("OR", a, b),
            };
            let open = within != Some(op);
            if open {
                out.push('(');
            }
            go(a, Some(op), next, flag, out);
            let _ = write!(out, " {op} ");
            go(b, Some(op), next, flag, out);
            if open {
                out.push(')');
            }
        }
        let mut out = String::new();
        go(self, None, &mut 0, flag, &mut out);
        out
    }

    pub fn uses_trace_level(&self) -> bool {
        self.filters()
            .into_iter()
            .flatten()
            .any(FieldExpr::uses_trace_level)
    }

    /// Whether one matching span is enough for a trace to match (no `&&` of
    /// spansets, no trace-level fields), so that a search may look at a time
    /// range piece by piece and stop when it has enough traces.
    pub fn per_span(&self) -> bool {
        fn has_and(e: &SpansetExpr) -> bool {
            match e {
                SpansetExpr::Filter(_) => false,
                SpansetExpr::And(..) => true,
                SpansetExpr::Or(a, b) => has_and(a) || has_and(b),
            }
        }
        !self.uses_trace_level() && !has_and(self)
    }
}

impl FieldExpr {
    pub fn uses_trace_level(&self) -> bool {
        match self {
            FieldExpr::And(a, b) | FieldExpr::Or(a, b) => {
                a.uses_trace_level() || b.uses_trace_level()
            }
            FieldExpr::Not(a) => a.uses_trace_level(),
            FieldExpr::Cmp(Attribute::Intrinsic(i), _, _) => i.is_trace_level(),
            FieldExpr::Cmp(..) => false,
        }
    }

    /// SQL over the span alias `s` and the per-trace summary alias `t`
    /// (`t.root_name`, `t.root_service_name`, `t.duration_ms`).
    /// The SQL condition; a chain of one operator is written flat, as in
    /// [`SpansetExpr::combine_sql`].
    pub fn to_sql(&self) -> String {
        fn go(e: &FieldExpr, within: Option<&str>, out: &mut String) {
            let (op, a, b) = match e {
                FieldExpr::And(a, b) => ("AND", a, b),
                FieldExpr::Or(a, b) => ("OR", a, b),
                FieldExpr::Not(a) => {
                    out.push_str("(NOT ");
                    go(a, None, out);
                    out.push(')');
                    return;
                }
                FieldExpr::Cmp(attr, op, value) => {
                    out.push_str(&comparison_sql(attr, *op, value));
                    return;
                }
            };
            let open = within != Some(op);
            if open {
                out.push('(');
            }
            go(a, Some(op), out);
            let _ = write!(out, " {op} ");
            go(b, Some(op), out);
            if open {
                out.push(')');
            }
        }
        let mut out = String::new();
        go(self, None, &mut out);
        out
    }
}

/// The SQL text of an attribute (a string, except the durations in ms).
pub fn attribute_sql(attr: &Attribute) -> String {
    match attr {
        Attribute::Span(k) => format!("s.attributes[{}]", sql_string(k)),
        Attribute::Resource(k) if k == "service.name" => "s.service_name".into(),
        Attribute::Resource(k) => format!("s.resource_attributes[{}]", sql_string(k)),
        Attribute::Any(k) if k == "service.name" => {
            format!("coalesce(s.attributes[{}], s.service_name)", sql_string(k))
        }
        Attribute::Any(k) => format!(
            "coalesce(s.attributes[{k}], s.resource_attributes[{k}])",
            k = sql_string(k)
        ),
        Attribute::Intrinsic(i) => match i {
            Intrinsic::Name => "s.name".into(),
            Intrinsic::Status => "s.status_code".into(),
            Intrinsic::StatusMessage => "s.status_message".into(),
            Intrinsic::Kind => "s.kind".into(),
            Intrinsic::Duration => "s.duration_ms".into(),
            Intrinsic::RootName => "t.root_name".into(),
            Intrinsic::RootServiceName => "t.root_service_name".into(),
            Intrinsic::TraceDuration => "t.duration_ms".into(),
        },
    }
}

fn float_sql(f: f64) -> String {
    // Always a decimal literal (never 1e300 notation DataFusion reads as text).
    format!("{f:.9}")
}

fn comparison_sql(attr: &Attribute, op: Op, value: &Static) -> String {
    let a = attribute_sql(attr);
    match (op, value) {
        (Op::Re, Static::Str(p)) => {
            format!("regexp_like({a}, {})", sql_string(&format!("^(?:{p})$")))
        }
        (Op::NotRe, Static::Str(p)) => {
            format!(
                "(NOT regexp_like({a}, {}))",
                sql_string(&format!("^(?:{p})$"))
            )
        }
        (_, Static::Str(s) | Static::Status(s) | Static::Kind(s)) => {
            format!("{a} {} {}", op.sql(), sql_string(s))
        }
        (_, Static::Bool(b)) => format!("lower({a}) {} '{b}'", op.sql()),
        (_, Static::Duration(ns)) => format!("{a} {} {}", op.sql(), float_sql(*ns as f64 / 1e6)),
        (_, Static::Int(i)) if matches!(attr, Attribute::Intrinsic(_)) => {
            format!("{a} {} {i}", op.sql())
        }
        (_, Static::Int(i)) => format!("TRY_CAST({a} AS DOUBLE) {} {i}", op.sql()),
        (_, Static::Float(f)) => format!("TRY_CAST({a} AS DOUBLE) {} {}", op.sql(), float_sql(*f)),
    }
}
