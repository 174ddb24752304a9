//! The Postgres wire protocol: psql, Grafana, psycopg, JDBC and BI tools.
//!
//! `datafusion-postgres` speaks the protocol (simple and extended queries,
//! bind parameters, `pg_catalog`, `SET`/`SHOW`, transactions, cursors).
//! By itself it executes anything, `COPY … TO` and `DROP TABLE` included,
//! so faasight wraps its handlers: every statement is classified before it
//! runs and only reads go through ([`check_statement`]); every result stream
//! is cut at the query timeout and the row limit, which drops (and so
//! cancels) the DataFusion execution and frees its memory. The session runs
//! on the engine's runtime, so the shared memory pool applies too.

use std::fmt::Debug;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::pgwire;
use datafusion_postgres::{DfSessionService, Parser};
use faasight_collector::connections::ConnectionBudget;
use futures::{FutureExt, Sink, StreamExt};
use pgwire::api::Type;
use pgwire::api::auth::cleartext::CleartextPasswordAuthStartupHandler;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::FieldInfo;
use pgwire::api::results::{QueryResponse, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionManager, ErrorHandler, PgWireServerHandlers,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpListener;
use tokio_rustls::rustls;

use crate::engine::{Limits, QueryEngine, QueryError, QueryMetrics, safe_options};
use crate::safety::check_statement;

/// Settings of the Postgres listener.
#[derive(Clone, Default)]
pub struct PgConfig {
    /// Required password for every user when set.
    pub password: Option<String>,
    /// PEM certificate chain and PKCS#8 key: TLS is offered when both are set.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
}

fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message,
    )))
}

/// A query over its memory limit as Postgres's `53200` (out_of_memory),
/// where datafusion-postgres sends every DataFusion error as `XX000`.
fn with_sqlstate(e: PgWireError) -> PgWireError {
    if let PgWireError::ApiError(inner) = &e
        && let Some(df) = inner.downcast_ref::<datafusion::error::DataFusionError>()
        && matches!(
            df.find_root(),
            datafusion::error::DataFusionError::ResourcesExhausted(_)
        )
    {
        return user_error("53200", df.to_string());
    }
    e
}

fn refused(message: String) -> PgWireError {
    // 25006: read_only_sql_transaction.
    user_error("25006", message)
}

/// A query DataFusion panicked on. XX000: internal_error.
fn panicked(payload: &(dyn std::any::Any + Send)) -> PgWireError {
    user_error(
        "XX000",
        QueryError::Panicked(crate::engine::panic_message(payload)).to_string(),
    )
}

fn timed_out(limit: Duration) -> PgWireError {
    // 57014: query_canceled, what Postgres sends at statement_timeout.
    user_error("57014", QueryError::Timeout(limit).to_string())
}

/// The wrapped `datafusion-postgres` service with faasight's checks and limits.
pub struct ReadOnlyService {
    inner: Arc<DfSessionService>,
    checked_parser: Arc<CheckedParser>,
    parser: PostgresCompatibilityParser,
    engine: QueryEngine,
}

impl Debug for ReadOnlyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOnlyService").finish_non_exhaustive()
    }
}

impl ReadOnlyService {
    fn limit(&self, response: Response, deadline: tokio::time::Instant) -> Response {
        match response {
            Response::Query(q) => Response::Query(limit_rows(
                q,
                deadline,
                self.engine.limits(),
                Arc::clone(&self.engine.metrics),
            )),
            other => other,
        }
    }

    async fn within_timeout<F, T>(&self, work: F) -> PgWireResult<T>
    where
        F: Future<Output = PgWireResult<T>>,
    {
        let timeout = self.engine.limits().timeout;
        let started = std::time::Instant::now();
        self.engine.metrics.queries.add(1);
        let work = std::panic::AssertUnwindSafe(work).catch_unwind();
        let result = tokio::time::timeout(timeout, work)
            .await
            .map(|r| r.unwrap_or_else(|p| Err(panicked(&*p))));
        self.engine.metrics.latency.observe(started.elapsed());
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.engine.metrics.failed.add(1);
                Err(with_sqlstate(e))
            }
            Err(_) => {
                self.engine.metrics.failed.add(1);
                self.engine.metrics.timeouts.add(1);
                Err(timed_out(timeout))
            }
        }
    }
}

/// Cuts a result stream at the deadline and the row and byte limits;
/// dropping the inner stream stops the query and releases its memory.
fn limit_rows(
    response: QueryResponse,
    deadline: tokio::time::Instant,
    limits: Limits,
    metrics: Arc<QueryMetrics>,
) -> QueryResponse {
    let Limits {
        timeout,
        max_rows,
        max_result_bytes,
    } = limits;
    let mut response = response;
    let command_tag = response.command_tag().to_owned();
    let row_schema = response.row_schema();
    let data_rows = std::mem::replace(response.data_rows(), Box::pin(futures::stream::empty()));
    let limited = futures::stream::unfold(Some((data_rows, 0usize, 0usize)), move |state| {
        let metrics = Arc::clone(&metrics);
        async move {
            let (mut rows, n, bytes) = state?;
            let next = std::panic::AssertUnwindSafe(rows.next()).catch_unwind();
            match tokio::time::timeout_at(deadline, next).await {
                Ok(Err(p)) => {
                    metrics.failed.add(1);
                    Some((Err(panicked(&*p)), None))
                }
                Ok(Ok(next)) => match next {
                    None => None,
                    Some(Err(e)) => {
                        metrics.failed.add(1);
                        Some((Err(with_sqlstate(e)), None))
                    }
                    Some(Ok(_)) if n >= max_rows => Some((
                        Err(user_error(
                            "54000",
                            QueryError::TooManyRows(max_rows).to_string(),
                        )),
                        None,
                    )),
                    Some(Ok(row)) if bytes + row.data.len() > max_result_bytes => Some((
                        Err(user_error(
                            "54000",
                            QueryError::TooManyBytes(max_result_bytes).to_string(),
                        )),
                        None,
                    )),
                    Some(Ok(row)) => {
                        let bytes = bytes + row.data.len();
                        Some((Ok(row), Some((rows, n + 1, bytes))))
                    }
                },
                Err(_) => {
                    metrics.failed.add(1);
                    metrics.timeouts.add(1);
                    Some((Err(timed_out(timeout)), None))
                }
            }
        }
    });
    let mut limited = QueryResponse::new(row_schema, limited);
    limited.set_command_tag(&command_tag);
    limited
}

/// Parses with the Postgres-compatible parser and refuses the whole string
/// if any statement is not allowed.
fn check_query(parser: &PostgresCompatibilityParser, query: &str) -> PgWireResult<()> {
    // 54001: statement_too_complex, what Postgres sends past its stack depth.
    crate::safety::check_nesting(query).map_err(|e| user_error("54001", e))?;
    let statements = parser.parse(query).map_err(|e| {
        // DataFusion's own statements (CREATE EXTERNAL TABLE, …) are no
        // Postgres syntax: name the refusal rather than the syntax error.
        match crate::safety::check_sql(query) {
            Err(reason) if !reason.contains("parser") => refused(reason),
            _ => user_error("42601", e.to_string()),
        }
    })?;
    for statement in &statements {
        if let Some(reason) = check_statement(statement) {
            return Err(refused(reason));
        }
    }
    Ok(())
}

/// The extended protocol's parser, checking each statement before
/// `datafusion-postgres` plans it.
pub struct CheckedParser {
    inner: Arc<Parser>,
    parser: PostgresCompatibilityParser,
}

impl Debug for CheckedParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedParser").finish_non_exhaustive()
    }
}

#[async_trait]
impl QueryParser for CheckedParser {
    type Statement = <Parser as QueryParser>::Statement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        check_query(&self.parser, sql)?;
        self.inner.parse_sql(client, sql, types).await
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.inner.get_result_schema(stmt, column_format)
    }
}

#[async_trait]
impl SimpleQueryHandler for ReadOnlyService {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // Refuse the whole string before running any of it.
        check_query(&self.parser, query)?;
        let timeout = self.engine.limits().timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let responses = self
            .within_timeout(SimpleQueryHandler::do_query(&*self.inner, client, query))
            .await?;
        Ok(responses
            .into_iter()
            .map(|r| self.limit(r, deadline))
            .collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for ReadOnlyService {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = CheckedParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.checked_parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let (_, Some((statement, plan))) = &portal.statement.statement {
            if let Some(reason) = check_statement(statement) {
                return Err(refused(reason));
            }
            if matches!(statement, Statement::Query(_)) {
                verify(plan)?;
            }
        }
        let timeout = self.engine.limits().timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let response = self
            .within_timeout(ExtendedQueryHandler::do_query(
                &*self.inner,
                client,
                portal,
                max_rows,
            ))
            .await?;
        Ok(self.limit(response, deadline))
    }
}

fn verify(plan: &LogicalPlan) -> PgWireResult<()> {
    safe_options()
        .verify_plan(plan)
        .map_err(|e| refused(e.strip_backtrace().to_string()))
}

/// A fixed password for every user name.
#[derive(Clone)]
struct FixedPassword(String);

impl Debug for FixedPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FixedPassword(<redacted>)")
    }
}

#[async_trait]
impl AuthSource for FixedPassword {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        Ok(Password::new(None, self.0.as_bytes().to_vec()))
    }
}

/// No authentication (the default, on loopback).
struct Open {
    connections: Arc<ConnectionManager>,
}

#[async_trait]
impl NoopStartupHandler for Open {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(Arc::clone(&self.connections))
    }
}

/// Startup: open, or a cleartext password check (use TLS off loopback).
enum Startup {
    Open(Open),
    Password(
        Box<CleartextPasswordAuthStartupHandler<FixedPassword, DefaultServerParameterProvider>>,
    ),
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Open(h) => h.on_startup(client, message).await,
            Startup::Password(h) => h.on_startup(client, message).await,
        }
    }
}

struct QuietErrors;

impl ErrorHandler for QuietErrors {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        tracing::debug!(%error, "postgres wire: error sent to the client");
    }
}

/// All handlers of one server.
pub struct Handlers {
    service: Arc<ReadOnlyService>,
    startup: Arc<Startup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers").finish_non_exhaustive()
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.service)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.service)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(QuietErrors)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.cancel)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PgSetupError {
    #[error("postgres wire: {0}")]
    Query(#[from] QueryError),
    #[error("postgres wire: pg_catalog: {0}")]
    Catalog(String),
    #[error("postgres wire TLS: {0}")]
    Tls(String),
}

/// The session every connection shares: faasight's tables, views and cost
/// functions plus `pg_catalog`, on the engine's runtime and memory pool.
pub async fn session(engine: &QueryEngine) -> Result<SessionContext, PgSetupError> {
    let ctx = engine.session().await?;
    setup_pg_catalog(&ctx, "faasight", EmptyContextProvider)
        .map_err(|e| PgSetupError::Catalog(e.strip_backtrace().to_string()))?;
    ctx.register_udf(current_setting());
    Ok(ctx)
}

/// `current_setting(name)`: the server settings clients ask for (Grafana
/// reads `search_path` to decide how to name tables); NULL for others.
fn current_setting() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::array::{Array, StringArray};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    let fun = Arc::new(|args: &[ColumnarValue]| {
        let names = match args.first() {
            Some(v) => v.to_array(1)?,
            None => return Ok(ColumnarValue::Scalar(None::<String>.into())),
        };
        let names = datafusion::arrow::compute::cast(&names, &DataType::Utf8)?;
        let names = names
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| {
                datafusion::error::DataFusionError::Internal("current_setting".into())
            })?;
        let values: StringArray = (0..names.len())
            .map(|i| {
                names
                    .is_valid(i)
                    .then(|| names.value(i).to_ascii_lowercase())
                    .and_then(|n| match n.as_str() {
                        "search_path" => Some("\"$user\", public"),
                        "timezone" => Some("UTC"),
                        "server_version" => Some("16.6"),
                        "server_version_num" => Some("160006"),
                        "server_encoding" | "client_encoding" => Some("UTF8"),
                        "datestyle" => Some("ISO, MDY"),
                        "standard_conforming_strings" => Some("on"),
                        "max_identifier_length" => Some("63"),
                        _ => None,
                    })
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(values)))
    });
    create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        fun,
    )
}

fn tls_acceptor(config: &PgConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, PgSetupError> {
    let (cert, key) = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => (c, k),
        (None, None) => return Ok(None),
        _ => {
            return Err(PgSetupError::Tls(
                "both a certificate and a key are needed".into(),
            ));
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let open = |p: &PathBuf| {
        std::fs::File::open(p)
            .map(BufReader::new)
            .map_err(|e| PgSetupError::Tls(format!("{}: {e}", p.display())))
    };
    let certs = rustls_pemfile::certs(&mut open(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PgSetupError::Tls(format!("{}: {e}", cert.display())))?;
    let key = rustls_pemfile::private_key(&mut open(key)?)
        .map_err(|e| PgSetupError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| PgSetupError::Tls(format!("no private key in {}", key.display())))?;
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| PgSetupError::Tls(e.to_string()))?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
}

/// A bound, ready Postgres server.
pub struct PgServer {
    listener: TcpListener,
    handlers: Arc<Handlers>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    budget: Option<Arc<ConnectionBudget>>,
}

impl Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer")
            .field("addr", &self.listener.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl PgServer {
    pub async fn new(
        engine: QueryEngine,
        listener: TcpListener,
        config: &PgConfig,
    ) -> Result<Self, PgSetupError> {
        let tls = tls_acceptor(config)?;
        let ctx = Arc::new(session(&engine).await?);
        let connections = Arc::new(ConnectionManager::new());
        let startup = match &config.password {
            None => Startup::Open(Open {
                connections: Arc::clone(&connections),
            }),
            Some(p) => Startup::Password(Box::new(
                CleartextPasswordAuthStartupHandler::new(
                    FixedPassword(p.clone()),
                    DefaultServerParameterProvider::default(),
                )
                .with_connection_manager(Arc::clone(&connections)),
            )),
        };
        let inner = Arc::new(DfSessionService::new(ctx));
        let checked_parser = Arc::new(CheckedParser {
            inner: inner.query_parser(),
            parser: PostgresCompatibilityParser::new(),
        });
        let handlers = Arc::new(Handlers {
            service: Arc::new(ReadOnlyService {
                inner,
                checked_parser,
                parser: PostgresCompatibilityParser::new(),
                engine,
            }),
            startup: Arc::new(startup),
            cancel: Arc::new(DefaultCancelHandler::new(connections)),
        });
        Ok(PgServer {
            listener,
            handlers,
            tls,
            budget: None,
        })
    }

    /// Counts this server's connections against `budget`, shared with the
    /// other ports.
    pub fn with_budget(mut self, budget: Arc<ConnectionBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => return,
                a = self.listener.accept() => a,
            };
            match accepted {
                Ok((socket, peer)) => {
                    let admitted = match &self.budget {
                        Some(budget) => match budget.admit("pg") {
                            Some(admitted) => Some(admitted),
                            None => continue,
                        },
                        None => None,
                    };
                    let handlers = Arc::clone(&self.handlers);
                    let tls = self.tls.clone();
                    tokio::spawn(async move {
                        let _admitted = admitted;
                        if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                            tracing::debug!(%peer, error = %e, "postgres wire connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "postgres wire: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Vec<Statement> {
        PostgresCompatibilityParser::new().parse(sql).expect(sql)
    }

    #[test]
    fn reads_and_session_statements_pass() {
        for sql in [
            "SELECT 1",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "EXPLAIN SELECT 1",
            "SHOW search_path",
            "SET extra_float_digits = 3",
            "SET application_name = 'psql'",
            "SET TIME ZONE 'UTC'",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
        ] {
            for statement in parse(sql) {
                assert_eq!(check_statement(&statement), None, "{sql}");
            }
        }
    }

    #[test]
    fn writes_and_server_settings_are_refused() {
        for (sql, needle) in [
            ("COPY (SELECT 1) TO '/tmp/x.csv'", "read-only"),
            ("DROP TABLE spans", "read-only"),
            ("CREATE TABLE t (a int)", "read-only"),
            ("CREATE VIEW v AS SELECT 1", "read-only"),
            ("INSERT INTO spans VALUES (1)", "read-only"),
            ("DELETE FROM spans", "read-only"),
            ("UPDATE spans SET name = 'x'", "read-only"),
            ("SET datafusion.execution.batch_size = 1", "not allowed"),
            (
                "SET datafusion.runtime.memory_limit = '100G'",
                "not allowed",
            ),
            ("EXPLAIN DELETE FROM spans", "read-only"),
        ] {
            let statements = parse(sql);
            let reason = statements
                .iter()
                .find_map(check_statement)
                .unwrap_or_else(|| panic!("{sql} passed"));
            assert!(reason.contains(needle), "{sql}: {reason}");
        }
    }
}
