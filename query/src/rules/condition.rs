//! A rule's `condition`, evaluated per result row: comparisons of a column
//! with a number or a string, joined by `&&` and `||`, with parentheses
//! (`value < 0.5 && savings_usd_month >= 1`). A null or missing value
//! makes its comparison false.

use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
    Cmp(String, CmpOp, Literal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Number(f64),
    Text(String),
    Bool(bool),
}

/// A row value as the condition sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Number(f64),
    Text(String),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("condition: {0}")]
pub struct ConditionError(pub String);

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Num(f64),
    Str(String),
    Op(CmpOp),
    And,
    Or,
    LParen,
    RParen,
}

fn lex(s: &str) -> Result<Vec<Tok>, ConditionError> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let err = |m: String| Err(ConditionError(m));
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            '&' if next == Some('&') => {
                out.push(Tok::And);
                i += 2;
            }
            '|' if next == Some('|') => {
                out.push(Tok::Or);
                i += 2;
            }
            '<' | '>' | '=' | '!' => {
                let (op, len) = match (c, next) {
                    ('<', Some('=')) => (CmpOp::Le, 2),
                    ('>', Some('=')) => (CmpOp::Ge, 2),
                    ('=', Some('=')) => (CmpOp::Eq, 2),
                    ('!', Some('=')) => (CmpOp::Ne, 2),
                    ('<', _) => (CmpOp::Lt, 1),
                    ('>', _) => (CmpOp::Gt, 1),
                    ('=', _) => (CmpOp::Eq, 1),
                    _ => return err(format!("unexpected '{c}' at {i}")),
                };
                out.push(Tok::Op(op));
                i += len;
            }
            '\'' | '"' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&d| d == c)
                    .ok_or_else(|| ConditionError(format!("unterminated string at {i}")))?;
                out.push(Tok::Str(chars[i + 1..i + 1 + end].iter().collect()));
                i += end + 2;
            }
            _ if c.is_ascii_digit() || c == '-' || c == '.' => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_')
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().filter(|&&d| d != '_').collect();
                let n: f64 = text
                    .parse()
                    .map_err(|_| ConditionError(format!("bad number {text:?}")))?;
                if !n.is_finite() {
                    return err(format!("bad number {text:?}"));
                }
                out.push(Tok::Num(n));
            }
            _ if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            _ => return err(format!("unexpected '{c}' at {i}")),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn or(&mut self) -> Result<Condition, ConditionError> {
        let mut left = self.and()?;
        while self.toks.get(self.pos) == Some(&Tok::Or) {
            self.pos += 1;
            left = Condition::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Condition, ConditionError> {
        let mut left = self.atom()?;
        while self.toks.get(self.pos) == Some(&Tok::And) {
            self.pos += 1;
            left = Condition::And(Box::new(left), Box::new(self.atom()?));
        }
        Ok(left)
    }

    fn atom(&mut self) -> Result<Condition, ConditionError> {
        self.depth += 1;
        if self.depth > 32 {
            return Err(ConditionError("nested too deeply".into()));
        }
        let out = match self.toks.get(self.pos).cloned() {
            Some(Tok::LParen) => {
                self.pos += 1;
                let e = self.or()?;
                if self.toks.get(self.pos) != Some(&Tok::RParen) {
                    return Err(ConditionError("expected ')'".into()));
                }
                self.pos += 1;
                e
            }
            Some(Tok::Ident(col)) => {
                self.pos += 1;
                let Some(Tok::Op(op)) = self.toks.get(self.pos).cloned() else {
                    return Err(ConditionError(format!("expected a comparison after {col}")));
                };
                self.pos += 1;
                let lit = match self.toks.get(self.pos).cloned() {
                    Some(Tok::Num(n)) => Literal::Number(n),
                    Some(Tok::Str(s)) => Literal::Text(s),
                    Some(Tok::Ident(w)) if w == "true" || w == "false" => {
                        Literal::Bool(w == "true")
                    }
                    _ => {
                        return Err(ConditionError(format!(
                            "{col} must compare with a number, a quoted string, true or false"
                        )));
                    }
                };
                self.pos += 1;
                Condition::Cmp(col, op, lit)
            }
            Some(t) => return Err(ConditionError(format!("unexpected {t:?}"))),
            None => return Err(ConditionError("unexpected end".into())),
        };
        self.depth -= 1;
        Ok(out)
    }
}

impl Condition {
    pub fn parse(s: &str) -> Result<Condition, ConditionError> {
        let mut p = Parser {
            toks: lex(s)?,
            pos: 0,
            depth: 0,
        };
        let c = p.or()?;
        if p.pos != p.toks.len() {
            return Err(ConditionError(format!("unexpected {:?}", p.toks[p.pos])));
        }
        Ok(c)
    }

    /// Columns the condition reads.
    pub fn columns(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut stack = vec![self];
        while let Some(c) = stack.pop() {
            match c {
                Condition::And(a, b) | Condition::Or(a, b) => {
                    stack.push(a);
                    stack.push(b);
                }
                Condition::Cmp(col, _, _) => {
                    out.insert(col.clone());
                }
            }
        }
        out
    }

    pub fn eval(&self, get: &dyn Fn(&str) -> Value) -> bool {
        match self {
            Condition::And(a, b) => a.eval(get) && b.eval(get),
            Condition::Or(a, b) => a.eval(get) || b.eval(get),
            Condition::Cmp(col, op, lit) => {
                let ord = match (get(col), lit) {
                    (Value::Number(v), Literal::Number(n)) => v.partial_cmp(n),
                    (Value::Text(v), Literal::Text(t)) => Some(v.as_str().cmp(t.as_str())),
                    (Value::Bool(v), Literal::Bool(b)) => Some(v.cmp(b)),
                    (Value::Text(v), Literal::Number(n)) => {
                        v.parse::<f64>().ok().and_then(|v| v.partial_cmp(n))
                    }
                    _ => None,
                };
                let Some(ord) = ord else { return false };
                use std::cmp::Ordering::*;
                match op {
                    CmpOp::Lt => ord == Less,
                    CmpOp::Le => ord != Greater,
                    CmpOp::Gt => ord == Greater,
                    CmpOp::Ge => ord != Less,
                    CmpOp::Eq => ord == Equal,
                    CmpOp::Ne => ord != Equal,
                }
            }
        }
    }
}
