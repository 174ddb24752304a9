//! Which statements may run: faasight only reads. Every interface (HTTP,
//! Postgres wire, CLI) classifies each statement here before planning it,
//! and DataFusion's `SQLOptions` check the plan again.

use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Set, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// Most operators one expression may chain (`a + b + …`, `x = 1 OR x = 2
/// OR …`, `SELECT … UNION ALL SELECT …`), counted through its enclosing
/// parentheses. Each one is a level of the expression or plan tree, which
/// DataFusion clones, drops, plans and evaluates recursively:
/// - the stack: on tokio's 2 MiB worker stacks a sum of about 1,900 terms
///   overflowed and aborted the server. The runtime's threads now have
///   8 MiB (see `faasight`'s `main`), where the costliest shape measured,
///   a `UNION ALL` chain, ran at 2,000 and overflowed at 4,000;
/// - the time: planning grows with the square of the depth, and cannot be
///   interrupted by the query timeout (`cargo bench --bench query`, figures
///   in benches/query-report.md).
///
/// Long lists belong in `IN (…)`, which this limit does not count.
pub const MAX_CHAINED_OPERATORS: usize = 500;

/// Refuses SQL whose expressions could nest deeper than
/// [`MAX_CHAINED_OPERATORS`], before anything parses it.
///
/// The parser bounds nesting through parentheses, calls and `CASE` (its
/// recursion limit), but reads a chain of infix operators in a loop into a
/// left-deep tree of any depth. This bound comes from the tokens alone:
/// within one comma-separated item, every operator may enclose everything
/// else in the item, parenthesized parts included, so an item is at most
/// as deep as its operators plus its deepest parenthesized part. Lists
/// (`IN ('a', 'b', …)`, select lists, `CASE` branches) do not add up:
/// their items are siblings.
pub fn check_nesting(sql: &str) -> Result<(), String> {
    // Text that does not tokenize gets the parser's own error.
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(());
    };
    if operator_depth(&tokens) > MAX_CHAINED_OPERATORS {
        return Err(format!(
            "the query nests too deeply: more than {MAX_CHAINED_OPERATORS} operators chained in one \
             expression (write long lists as IN (…), or split the query)"
        ));
    }
    Ok(())
}

/// One parenthesis level while [`operator_depth`] reads it.
#[derive(Default)]
struct Level {
    /// Operators in the current item.
    operators: usize,
    /// The deepest parenthesized part of the current item.
    inner: usize,
    /// The deepest item finished so far.
    deepest: usize,
}

impl Level {
    fn end_item(&mut self) {
        self.deepest = self.deepest.max(self.operators + self.inner);
        self.operators = 0;
        self.inner = 0;
    }

    fn depth(mut self) -> usize {
        self.end_item();
        self.deepest
    }
}

/// An upper bound of the operators on any path down the expression trees
/// that `tokens` can parse into (see [`check_nesting`]).
fn operator_depth(tokens: &[Token]) -> usize {
    let mut levels = vec![Level::default()];
    for token in tokens {
        match token {
            Token::LParen => levels.push(Level::default()),
            Token::RParen if levels.len() > 1 => {
                let inner = levels.pop().map_or(0, Level::depth);
                let outer = levels.last_mut().expect("the outermost level stays");
                outer.inner = outer.inner.max(inner);
            }
            Token::Comma | Token::SemiColon => levels.last_mut().expect("a level").end_item(),
            Token::Word(w) if is_operator_keyword(w.keyword) => {
                levels.last_mut().expect("a level").operators += 1;
            }
            // A new branch of a CASE: a sibling of the one before.
            Token::Word(w)
                if matches!(w.keyword, Keyword::WHEN | Keyword::THEN | Keyword::ELSE) =>
            {
                levels.last_mut().expect("a level").end_item();
            }
            // Names, literals, placeholders and layout chain nothing.
            Token::Word(_)
            | Token::RParen
            | Token::Whitespace(_)
            | Token::EOF
            | Token::Period
            | Token::RBracket
            | Token::Placeholder(_)
            | Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::EscapedStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_) => {}
            // Every other symbol is an operator: arithmetic, comparison,
            // `::`, `[`, `->`, `||`, ….
            _ => levels.last_mut().expect("a level").operators += 1,
        }
    }
    // Parentheses left open (the parser refuses those) close here.
    while levels.len() > 1 {
        let inner = levels.pop().map_or(0, Level::depth);
        let outer = levels.last_mut().expect("the outermost level stays");
        outer.inner = outer.inner.max(inner);
    }
    levels.pop().map_or(0, Level::depth)
}

/// Keywords that join two expressions (or two queries) into one node.
fn is_operator_keyword(k: Keyword) -> bool {
    matches!(
        k,
        Keyword::AND
            | Keyword::OR
            | Keyword::XOR
            | Keyword::NOT
            | Keyword::IS
            | Keyword::LIKE
            | Keyword::ILIKE
            | Keyword::SIMILAR
            | Keyword::BETWEEN
            | Keyword::IN
            | Keyword::COLLATE
            | Keyword::AT
            | Keyword::DIV
            | Keyword::OVERLAPS
            | Keyword::REGEXP
            | Keyword::RLIKE
            | Keyword::OPERATOR
            | Keyword::UNION
            | Keyword::INTERSECT
            | Keyword::EXCEPT
            | Keyword::JOIN
    )
}

/// `SET` variables clients send on connect; they only change how this
/// connection's results are formatted. Everything else (DataFusion's
/// execution options above all) is refused.
const SETTABLE: &[&str] = &[
    "statement_timeout",
    "datestyle",
    "bytea_output",
    "intervalstyle",
    "application_name",
    "extra_float_digits",
    "search_path",
    "client_encoding",
    "client_min_messages",
    "timezone",
    "lc_messages",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
];

/// Why a statement may not run: `None` when it is a read or a harmless
/// session statement.
pub fn check_statement(statement: &Statement) -> Option<String> {
    match statement {
        Statement::Query(_) => None,
        Statement::Explain { statement, .. } => check_statement(statement),
        Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. } => None,
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. } => None,
        // Cursors over a query (psycopg's named cursors); the query is a
        // SELECT by the grammar.
        Statement::Declare { .. } | Statement::Fetch { .. } | Statement::Close { .. } => None,
        Statement::Set(Set::SetTimeZone { .. }) | Statement::Set(Set::SetNames { .. }) => None,
        Statement::Set(Set::SingleAssignment { variable, .. }) => {
            let name = variable.to_string().to_ascii_lowercase();
            if SETTABLE.contains(&name.as_str()) {
                None
            } else {
                Some(format!(
                    "SET {name} is not allowed: faasight's execution settings are fixed by the server"
                ))
            }
        }
        other => {
            let text = other.to_string();
            let mut words = text.split_whitespace();
            let mut kind = words.next().unwrap_or_default().to_ascii_uppercase();
            if let Some(next) = words
                .next()
                .filter(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
            {
                kind.push(' ');
                kind.push_str(&next.to_ascii_uppercase());
            }
            Some(format!(
                "faasight is read-only: {kind} is not allowed (only SELECT, EXPLAIN, SHOW and connection settings)"
            ))
        }
    }
}

/// Why a statement of DataFusion's dialect may not run (its own extensions
/// included: `CREATE EXTERNAL TABLE`, `COPY … TO`).
pub fn check_df_statement(statement: &DfStatement) -> Option<String> {
    match statement {
        DfStatement::Statement(s) => check_statement(s),
        DfStatement::Explain(e) => check_df_statement(&e.statement),
        DfStatement::CreateExternalTable(_) => {
            Some("faasight is read-only: CREATE EXTERNAL TABLE is not allowed".into())
        }
        DfStatement::CopyTo(_) => Some("faasight is read-only: COPY is not allowed".into()),
        DfStatement::Reset(_) => Some(
            "RESET is not allowed: faasight's execution settings are fixed by the server".into(),
        ),
    }
}

/// Checks a whole request: exactly one allowed statement.
pub fn check_sql(sql: &str) -> Result<(), String> {
    checked_statement(sql).map(|_| ())
}

/// The one allowed statement of a request, parsed (DataFusion's dialect).
pub fn checked_statement(sql: &str) -> Result<DfStatement, String> {
    check_nesting(sql)?;
    let mut statements = DFParser::parse_sql(sql).map_err(|e| e.strip_backtrace().to_string())?;
    if statements.len() > 1 {
        return Err("more than one statement per query is not allowed".into());
    }
    let statement = statements
        .pop_front()
        .ok_or_else(|| "the query is empty".to_string())?;
    match check_df_statement(&statement) {
        Some(reason) => Err(reason),
        None => Ok(statement),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_datafusion_dialect_is_checked_too() {
        assert_eq!(check_sql("SELECT 1"), Ok(()));
        assert_eq!(check_sql("EXPLAIN SELECT 1"), Ok(()));
        for (sql, needle) in [
            (
                "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
                "EXTERNAL",
            ),
            ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
            ("COPY spans TO '/tmp/x.parquet'", "COPY"),
            ("EXPLAIN COPY spans TO '/tmp/x.parquet'", "COPY"),
            ("SELECT 1; DROP TABLE spans", "more than one"),
            ("DROP TABLE spans", "not allowed"),
            ("SET datafusion.execution.batch_size = 1", "not allowed"),
            ("RESET datafusion.execution.batch_size", "RESET"),
        ] {
            let err = check_sql(sql).expect_err(sql);
            assert!(err.contains(needle), "{sql}: {err}");
        }
    }

    fn depth(sql: &str) -> usize {
        let tokens = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize()
            .expect("tokenizes");
        operator_depth(&tokens)
    }

    fn chain(n: usize, term: &str, op: &str) -> String {
        vec![term; n].join(op)
    }

    #[test]
    fn chained_operators_count_through_parentheses() {
        assert_eq!(depth("SELECT 1"), 0);
        assert_eq!(depth("SELECT 1 + 2 * 3"), 2);
        // An operator after a parenthesized part still encloses it:
        // ((a + b) + c) + d is three deep.
        assert_eq!(depth("SELECT (a + b) + c + d"), 3);
        assert_eq!(depth("SELECT a + (b + (c + d))"), 3);
        assert_eq!(depth("SELECT f(a + b, c) + 1"), 2);
        assert_eq!(depth("SELECT x::int::bigint FROM t"), 2);
        assert_eq!(
            depth("SELECT a FROM t WHERE b = 1 AND c LIKE 'x%' OR d IS NOT NULL"),
            6
        );
        assert_eq!(depth("SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3"), 2);
        // Operators in strings, quoted names and comments are text.
        assert_eq!(depth("SELECT '1+1+1' AS \"a+b\" -- + + +\n"), 0);
    }

    #[test]
    fn lists_and_case_branches_do_not_add_up() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("'id-{i}'")).collect();
        let sql = format!("SELECT * FROM spans WHERE trace_id IN ({})", ids.join(", "));
        assert_eq!(depth(&sql), 2, "IN and the parenthesis' items");
        let columns = chain(5_000, "a + 1", ", ");
        assert_eq!(depth(&format!("SELECT {columns} FROM t")), 1);
        let branches: String = (0..3_000)
            .map(|i| format!(" WHEN x = {i} THEN y + {i}"))
            .collect();
        assert_eq!(
            depth(&format!("SELECT CASE{branches} ELSE 0 END FROM t")),
            1
        );
        assert_eq!(check_sql(&sql), Ok(()));
    }

    #[test]
    fn a_chain_past_the_limit_is_refused_before_parsing() {
        let at = format!("SELECT {}", chain(MAX_CHAINED_OPERATORS + 1, "1", " + "));
        assert_eq!(depth(&at), MAX_CHAINED_OPERATORS);
        assert_eq!(check_sql(&at), Ok(()));
        let past = format!("SELECT {}", chain(MAX_CHAINED_OPERATORS + 2, "1", " + "));
        let err = check_sql(&past).expect_err("one operator too many");
        assert!(err.contains("nests too deeply"), "{err}");
        // Split across parentheses, the operators still add up.
        let mut nested = "1".to_string();
        for _ in 0..10 {
            nested = format!("({} + {nested})", chain(51, "1", " + "));
        }
        assert_eq!(depth(&format!("SELECT {nested}")), 510);
        assert!(check_sql(&format!("SELECT {nested}")).is_err());
        // 100,000 terms: refused as fast, not handed to the parser.
        let huge = format!("SELECT {}", chain(100_000, "1", "+"));
        assert!(
            check_sql(&huge)
                .expect_err("huge")
                .contains("nests too deeply")
        );
    }
}
