//! Running SQL: a DataFusion session over faasight's tables, read-only, with
//! a timeout, a memory pool and a row limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::datasource::TableProvider;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use faasight_collector::buffer::Buffer;
use faasight_collector::model::Table;
use faasight_collector::telemetry::{Counter, Histogram, render_counter};
use futures::{FutureExt, StreamExt};

use crate::bounded_plan::BoundFunctions;
use crate::catalog::alerts::AlertBoard;
use crate::catalog::id_filter::IdFilters;
use crate::catalog::invocations::{CoalescedStore, InvocationsView};
use crate::catalog::tables::FaasightTable;
use crate::catalog::views::{INVOCATIONS_SQL, ViewPlans};
use crate::coop::YieldAboveMultipliers;
use crate::cost::{PriceCatalog, cost_udfs};
use crate::grouping::RunGroupedAggregates;
use crate::memory::QueryPool;

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
    #[error(
        "result exceeds {} (--query-max-result-bytes); select fewer columns, add a LIMIT or aggregate",
        crate::memory::human_bytes(*.0)
    )]
    TooManyBytes(usize),
    /// DataFusion panicked on this query (its own bug, e.g. `repeat` past
    /// 2 GiB of text); the panic is caught and the server goes on.
    #[error("the query failed inside DataFusion: {0}")]
    Panicked(String),
}

/// The message of a caught panic.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        QueryError::Sql(e.strip_backtrace().to_string())
    }
}

/// What one query may take and return.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub max_rows: usize,
    pub max_result_bytes: usize,
}

/// The bytes of the rows a batch holds: for a slice of a larger batch (a
/// `LIMIT`), only its part of the buffers.
fn result_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or(usize::MAX / 2)
        })
        .sum()
}

/// Limits and settings of the query engine.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    pub timeout: Duration,
    pub max_rows: usize,
    /// Bytes of a result (its Arrow columns, or its Postgres data rows).
    pub max_result_bytes: usize,
    /// Memory all running queries may hold together.
    pub memory_limit: usize,
    /// Memory one query may hold.
    pub query_memory: usize,
    pub target_partitions: usize,
    /// Prices for the cost columns and functions.
    pub pricing: Arc<PriceCatalog>,
    /// The data directory, where settled invocations are kept coalesced;
    /// `None` for an engine without one (`rules check`).
    pub data_dir: Option<std::path::PathBuf>,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout: Duration::from_secs(30),
            max_rows: 1_000_000,
            max_result_bytes: 256 << 20,
            memory_limit: 2 << 30,
            query_memory: 1 << 30,
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            pricing: Arc::new(
                PriceCatalog::shipped().expect("the shipped price catalog is valid (unit-tested)"),
            ),
            data_dir: None,
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
    pub coalesce_failures: Counter,
}

/// Hours one pass of the background coalescer merges at most (a server
/// started on a week of raw records catches up over a few passes).
const COALESCE_HOURS_PER_PASS: usize = 24;

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
    /// The settled hours of `invocations`, merged on disk.
    coalesced: Arc<CoalescedStore>,
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
        let coalesced = Arc::new(CoalescedStore::open(
            config.data_dir.as_deref(),
            &format!("{}{INVOCATIONS_SQL}", config.pricing.identity()),
        ));
        Ok(QueryEngine {
            coalesced,
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

    /// The query timeout and the result limits.
    pub fn limits(&self) -> Limits {
        Limits {
            timeout: self.config.timeout,
            max_rows: self.config.max_rows,
            max_result_bytes: self.config.max_result_bytes,
        }
    }

    /// A fresh session with every table and view registered.
    pub async fn session(&self) -> Result<SessionContext, QueryError> {
        let plans = self.view_plans().await?;
        let ctx = self.base_session()?;
        plans.register(&ctx)?;
        Ok(ctx)
    }

    async fn view_plans(&self) -> Result<&Arc<ViewPlans>, QueryError> {
        self.views
            .get_or_try_init(|| async {
                // Planned once, in a session of their own.
                let template = self.base_session()?;
                ViewPlans::plan(&template, |merge| {
                    InvocationsView::new(
                        merge,
                        Arc::clone(&self.coalesced),
                        self.buffer.clone(),
                        Arc::clone(&self.ids),
                    )
                })
                .await
                .map(Arc::new)
            })
            .await
    }

    /// Merges up to `max_hours` settled hours of `invocations` into their
    /// coalesced files (oldest first); returns how many were written.
    pub async fn coalesce_invocations(&self, max_hours: usize) -> Result<usize, QueryError> {
        let plans = self.view_plans().await?;
        let ctx = self.session().await?;
        let now = chrono::Utc::now().timestamp_micros();
        Ok(plans
            .invocations
            .coalesce(&ctx.state(), now, max_hours)
            .await?)
    }

    /// Renders the engine's metrics in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        self.metrics.render(out);
        faasight_collector::telemetry::render_gauge(
            out,
            "faasight_invocations_coalesced_hours",
            "Hours of invocations kept merged on disk",
            self.coalesced.hours() as u64,
        );
        faasight_collector::telemetry::render_gauge(
            out,
            "faasight_query_memory_bytes",
            "Memory held by running queries (the shared pool of --query-memory-limit)",
            self.runtime.memory_pool.reserved() as u64,
        );
        render_counter(
            out,
            "faasight_invocations_coalesce_failures_total",
            "Passes of the invocation coalescer that failed",
            &[("", self.metrics.coalesce_failures.get())],
        );
    }

    /// Coalesces settled hours of `invocations` every `interval` until
    /// `stop` resolves; a failed pass is logged, counted and retried.
    pub async fn run_coalescer(
        self,
        interval: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        // Soon after start, then every `interval`.
        let mut wait = interval.min(Duration::from_secs(2));
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = interval;
            let started = Instant::now();
            match self.coalesce_invocations(COALESCE_HOURS_PER_PASS).await {
                Ok(0) => {}
                Ok(hours) => tracing::info!(
                    hours,
                    seconds = started.elapsed().as_secs_f64(),
                    "invocations coalesced"
                ),
                Err(e) => {
                    self.metrics.coalesce_failures.add(1);
                    tracing::warn!(error = %e, "coalescing invocations failed");
                }
            }
        }
    }

    /// Deletes replaced coalesced files now (a process that is the only
    /// reader, like `faasight generate`).
    pub fn purge_replaced_files(&self) -> usize {
        let purged = self.coalesced.purge_retired(Duration::ZERO);
        self.ids.forget(&purged);
        purged.len()
    }

    /// A session with the tables, the cost functions and `prices`.
    fn base_session(&self) -> Result<SessionContext, QueryError> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(self.config.target_partitions)
            .with_default_catalog_and_schema("faasight", "public");
        // Each session (one per query) draws on the shared pool through a
        // pool of its own with the per-query limit; caches are shared.
        let pool = Arc::new(QueryPool::new(
            Arc::clone(&self.runtime.memory_pool),
            self.config.query_memory,
        ));
        let limits = crate::bounded::Limits {
            query: self.config.query_memory,
        };
        let runtime = RuntimeEnvBuilder::from_runtime_env(&self.runtime)
            .with_memory_pool(pool)
            .build_arc()?;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_analyzer_rule(Arc::new(BoundFunctions::new(limits)))
            .with_optimizer_rule(Arc::new(BoundFunctions::new(limits)))
            .with_physical_optimizer_rule(Arc::new(RunGroupedAggregates))
            .with_physical_optimizer_rule(Arc::new(YieldAboveMultipliers))
            .build();
        let ctx = SessionContext::new_with_state(state);
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
        ctx.register_udf(crate::datetime::UtcDateTrunc::udf());
        ctx.register_udaf(crate::percentile::ExactPercentile::udaf());
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
        // DataFusion re-raises a panic of its tasks in the one reading the
        // result: caught here, it fails this query instead of the request.
        let run = std::panic::AssertUnwindSafe(self.run(sql)).catch_unwind();
        let result = tokio::time::timeout(self.config.timeout, run)
            .await
            .map(|r| r.unwrap_or_else(|p| Err(QueryError::Panicked(panic_message(&*p)))));
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
        let (mut rows, mut bytes) = (0, 0);
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            rows += batch.num_rows();
            if rows > self.config.max_rows {
                return Err(QueryError::TooManyRows(self.config.max_rows));
            }
            bytes += result_bytes(&batch);
            if bytes > self.config.max_result_bytes {
                return Err(QueryError::TooManyBytes(self.config.max_result_bytes));
            }
            batches.push(batch);
        }
        Ok(QueryResult { schema, batches })
    }
}
