//! Running SQL: a DataFusion session over faasight's tables, read-only, with
//! a timeout, a memory pool and a row limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::datasource::TableProvider;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use faasight_collector::buffer::Buffer;
use faasight_collector::model::Table;
use faasight_collector::telemetry::{Counter, Histogram, render_counter};
use futures::StreamExt;

use crate::catalog::alerts::AlertBoard;
use crate::catalog::id_filter::IdFilters;
use crate::catalog::tables::FaasightTable;
use crate::catalog::views::ViewPlans;
use crate::cost::{PriceCatalog, cost_udfs};

/// Why a query failed; each maps to one status per API.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL is invalid, refused as unsafe, or failed while planning or running.
    #[error("{0}")]
    Sql(String),
    #[error("query exceeded the timeout of {0:?}")]
    Timeout(Duration),
    #[error("result exceeds {0} rows; add a LIMIT or aggregate")]
    TooManyRows(usize),
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        QueryError::Sql(e.strip_backtrace().to_string())
    }
}

/// Limits and settings of the query engine.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    pub timeout: Duration,
    pub max_rows: usize,
    /// Memory all running queries may hold together.
    pub memory_limit: usize,
    pub target_partitions: usize,
    /// Prices for the cost columns and functions.
    pub pricing: Arc<PriceCatalog>,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout: Duration::from_secs(30),
            max_rows: 1_000_000,
            memory_limit: 2 << 30,
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            pricing: Arc::new(
                PriceCatalog::shipped().expect("the shipped price catalog is valid (unit-tested)"),
            ),
        }
    }
}

/// Query counters for `/metrics`.
#[derive(Debug, Default)]
pub struct QueryMetrics {
    pub queries: Counter,
    pub failed: Counter,
    pub timeouts: Counter,
    pub latency: Histogram,
}

impl QueryMetrics {
    pub fn render(&self, out: &mut String) {
        render_counter(
            out,
            "faasight_queries_total",
            "SQL queries run",
            &[("", self.queries.get())],
        );
        render_counter(
            out,
            "faasight_queries_failed_total",
            "SQL queries that failed",
            &[("", self.failed.get())],
        );
        render_counter(
            out,
            "faasight_queries_timed_out_total",
            "SQL queries stopped at the timeout",
            &[("", self.timeouts.get())],
        );
        self.latency
            .render(out, "faasight_query_seconds", "SQL query latency", "");
    }
}

/// The query engine shared by the HTTP API and the CLI.
#[derive(Debug, Clone)]
pub struct QueryEngine {
    buffer: Buffer,
    config: QueryConfig,
    runtime: Arc<RuntimeEnv>,
    /// Bloom filters of the id columns, shared by every session.
    ids: Arc<IdFilters>,
    /// The views, planned by the first session.
    views: Arc<tokio::sync::OnceCell<Arc<ViewPlans>>>,
    /// The rules engine's active alerts, the `alerts` table.
    alerts: Arc<AlertBoard>,
    pub metrics: Arc<QueryMetrics>,
}

/// A finished query.
#[derive(Debug)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// Read-only: no DDL, no DML (which includes `COPY … TO`), no `SET` or other
/// statements. URL/file-path tables stay off because the session never calls
/// `enable_url_table`.
pub fn safe_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

impl QueryEngine {
    pub fn new(buffer: Buffer, config: QueryConfig) -> Result<Self, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(config.memory_limit)))
            .build_arc()?;
        Ok(QueryEngine {
            buffer,
            config,
            runtime,
            ids: Arc::new(IdFilters::default()),
            views: Arc::new(tokio::sync::OnceCell::new()),
            alerts: Arc::new(AlertBoard::default()),
            metrics: Arc::new(QueryMetrics::default()),
        })
    }

    /// Where the rules engine publishes its alerts for the `alerts` table.
    pub fn alert_board(&self) -> &Arc<AlertBoard> {
        &self.alerts
    }

    /// The query timeout and the row limit.
    pub fn limits(&self) -> (Duration, usize) {
        (self.config.timeout, self.config.max_rows)
    }

    /// A fresh session with every table and view registered.
    pub async fn session(&self) -> Result<SessionContext, QueryError> {
        let plans = self
            .views
            .get_or_try_init(|| async {
                // Planned once, in a session of their own.
                let template = self.base_session()?;
                ViewPlans::plan(&template).await.map(Arc::new)
            })
            .await?;
        let ctx = self.base_session()?;
        plans.register(&ctx)?;
        Ok(ctx)
    }

    /// A session with the tables, the cost functions and `prices`.
    fn base_session(&self) -> Result<SessionContext, QueryError> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(self.config.target_partitions)
            .with_default_catalog_and_schema("faasight", "public");
        let ctx = SessionContext::new_with_config_rt(config, Arc::clone(&self.runtime));
        for table in Table::ALL {
            ctx.register_table(
                table.name(),
                Arc::new(FaasightTable::new(
                    table,
                    self.buffer.clone(),
                    Arc::clone(&self.ids),
                )),
            )?;
        }
        for udf in cost_udfs(&self.config.pricing) {
            ctx.register_udf(udf);
        }
        ctx.register_table(
            "prices",
            Arc::new(crate::cost::prices_table(&self.config.pricing)?),
        )?;
        ctx.register_table("alerts", Arc::clone(&self.alerts) as Arc<dyn TableProvider>)?;
        Ok(ctx)
    }

    /// The columns a read-only statement would return, planned against
    /// the real schema without running it.
    pub async fn plan_columns(&self, sql: &str) -> Result<Vec<String>, QueryError> {
        let statement = crate::safety::checked_statement(sql).map_err(QueryError::Sql)?;
        let ctx = self.session().await?;
        let plan = ctx.state().statement_to_plan(statement).await?;
        safe_options().verify_plan(&plan)?;
        Ok(plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect())
    }

    /// Runs one read-only statement within the limits.
    pub async fn execute(&self, sql: &str) -> Result<QueryResult, QueryError> {
        let started = Instant::now();
        self.metrics.queries.add(1);
        let result = tokio::time::timeout(self.config.timeout, self.run(sql)).await;
        self.metrics.latency.observe(started.elapsed());
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.metrics.failed.add(1);
                Err(e)
            }
            Err(_) => {
                self.metrics.failed.add(1);
                self.metrics.timeouts.add(1);
                Err(QueryError::Timeout(self.config.timeout))
            }
        }
    }

    async fn run(&self, sql: &str) -> Result<QueryResult, QueryError> {
        // Parsed once: checked, then planned and the plan verified.
        let statement = crate::safety::checked_statement(sql).map_err(QueryError::Sql)?;
        let ctx = self.session().await?;
        let plan = ctx.state().statement_to_plan(statement).await?;
        safe_options().verify_plan(&plan)?;
        let df = ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let mut stream = df.execute_stream().await?;
        let mut batches = Vec::new();
        let mut rows = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            rows += batch.num_rows();
            if rows > self.config.max_rows {
                return Err(QueryError::TooManyRows(self.config.max_rows));
            }
            batches.push(batch);
        }
        Ok(QueryResult { schema, batches })
    }
}
