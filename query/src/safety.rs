//! Which statements may run: faasight only reads. Every interface (HTTP,
//! Postgres wire, CLI) classifies each statement here before planning it,
//! and DataFusion's `SQLOptions` check the plan again.

use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Set, Statement};

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
}
