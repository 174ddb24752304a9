//! Views over the raw tables.
//!
//! `invocations` coalesces the records of one invocation (function, request
//! id) from every source: Lambda's own numbers (REPORT, Telemetry API) win
//! for durations and memory, the handler span gives the trace id (the X-Ray
//! root from REPORT otherwise), `cold_start` is true when any source says so,
//! and `status` is the worst reported (`oom` > `timeout` > `error` > `ok`;
//! a `signal: killed` exit at the memory limit is an `oom`).
//! `billed_duration_ms` is as reported, or derived with Lambda's rules for
//! its date when absent: 1 ms rounding, plus INIT since 2025-08-01.
//! `cost_usd` prices each invocation with the catalog in force on its date
//! (`invocation_cost`); `cost_estimated` says a default region, provider or
//! architecture stood in for an unknown one.
//!
//! Settled hours are kept merged on disk (see [`super::invocations`]).

use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::datatypes::{DataType, TimeUnit};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::ViewTable;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{ColumnarValue, Expr, LogicalPlan};
use datafusion::prelude::SessionContext;

use super::invocations::InvocationsView;
use crate::engine::QueryError;

pub const INVOCATIONS_SQL: &str = r#"
SELECT *,
  invocation_cost(provider, region, architecture, billed_duration_ms, duration_ms,
                  memory_size_mb, max_memory_used_mb, time) AS cost_usd,
  invocation_cost_estimated(provider, region, architecture, time) AS cost_estimated
FROM (
SELECT
  min(time) AS time,
  function_name,
  max(function_version) AS function_version,
  max(provider) AS provider,
  max(region) AS region,
  max(account_id) AS account_id,
  request_id,
  coalesce(max(CASE WHEN source = 'span' THEN trace_id END), max(trace_id)) AS trace_id,
  max(trigger) AS trigger,
  coalesce(bool_or(cold_start), false) AS cold_start,
  max(init_duration_ms) AS init_duration_ms,
  coalesce(max(CASE WHEN source <> 'span' THEN duration_ms END), max(duration_ms)) AS duration_ms,
  coalesce(
    max(billed_duration_ms),
    CAST(ceil(
      coalesce(max(CASE WHEN source <> 'span' THEN duration_ms END), max(duration_ms))
      + CASE WHEN min(time) >= TIMESTAMP '2025-08-01T00:00:00Z' THEN coalesce(max(init_duration_ms), 0) ELSE 0 END
    ) AS BIGINT)
  ) AS billed_duration_ms,
  max(memory_size_mb) AS memory_size_mb,
  max(max_memory_used_mb) AS max_memory_used_mb,
  max(architecture) AS architecture,
  max(runtime) AS runtime,
  CASE
    WHEN bool_or(status = 'oom')
      OR (bool_or(error_type LIKE '%signal: killed%') AND max(max_memory_used_mb) >= max(memory_size_mb)) THEN 'oom'
    WHEN bool_or(status = 'timeout') THEN 'timeout'
    WHEN bool_or(status = 'error') THEN 'error'
    ELSE 'ok'
  END AS status,
  max(error_type) AS error_type
FROM invocation_records
GROUP BY function_name, request_id
) AS merged
"#;

/// Per-function summary; `{range}` is empty for the view (all data) and a
/// time filter with placeholders for the `function_stats(...)` table function.
const FUNCTION_STATS_SQL: &str = r#"
SELECT
  function_name,
  min(time) AS first_seen,
  max(time) AS last_seen,
  count(*) AS invocations,
  sum(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END) AS errors,
  sum(CASE WHEN status = 'timeout' THEN 1 ELSE 0 END) AS timeouts,
  sum(CASE WHEN status = 'oom' THEN 1 ELSE 0 END) AS out_of_memory,
  CAST(sum(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END) AS DOUBLE) / count(*) AS error_rate,
  sum(CASE WHEN cold_start THEN 1 ELSE 0 END) AS cold_starts,
  CAST(sum(CASE WHEN cold_start THEN 1 ELSE 0 END) AS DOUBLE) / count(*) AS cold_start_rate,
  avg(duration_ms) AS avg_duration_ms,
  percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50_duration_ms,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_duration_ms,
  percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99_duration_ms,
  max(duration_ms) AS max_duration_ms,
  percentile_cont(0.5) WITHIN GROUP (ORDER BY init_duration_ms) AS p50_init_duration_ms,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY init_duration_ms) AS p95_init_duration_ms,
  percentile_cont(0.99) WITHIN GROUP (ORDER BY init_duration_ms) AS p99_init_duration_ms,
  max(memory_size_mb) AS memory_size_mb,
  max(max_memory_used_mb) AS max_memory_used_mb,
  CAST(max(max_memory_used_mb) AS DOUBLE) / max(memory_size_mb) AS memory_used_ratio,
  sum(cost_usd) AS cost_usd,
  sum(cost_usd) / count(*) AS cost_per_invocation_usd,
  coalesce(bool_or(cost_estimated), false) AS cost_estimated
FROM invocations
{range}
GROUP BY function_name
"#;

/// The time filter of `function_stats(start, end)`.
const FUNCTION_STATS_RANGE: &str = "WHERE time >= $1 AND time < $2";

/// AWS Lambda cost per calendar month and account, region and architecture,
/// with the volume tiers applied to the month's GB-seconds (the free tier,
/// shared by all regions of an account, is not subtracted).
const MONTHLY_COSTS_SQL: &str = r#"
SELECT
  month, account_id, region, architecture, invocations, gb_seconds,
  request_cost_usd, list_cost_usd,
  request_cost_usd + lambda_tiered_cost(gb_seconds, architecture, region, month) AS cost_usd,
  greatest(0.0, list_cost_usd - request_cost_usd
    - lambda_tiered_cost(gb_seconds, architecture, region, month)) AS tier_discount_usd
FROM (
  SELECT
    date_trunc('month', time) AS month,
    account_id,
    region,
    coalesce(architecture, 'x86_64') AS architecture,
    count(*) AS invocations,
    sum(CAST(billed_duration_ms AS DOUBLE) / 1000.0 * CAST(memory_size_mb AS DOUBLE) / 1024.0)
      AS gb_seconds,
    sum(lambda_cost(0, 0, architecture, region, NULL, time)) AS request_cost_usd,
    sum(cost_usd) AS list_cost_usd
  FROM invocations
  WHERE coalesce(provider, 'aws') = 'aws'
    AND billed_duration_ms IS NOT NULL AND memory_size_mb IS NOT NULL
  GROUP BY date_trunc('month', time), account_id, region, coalesce(architecture, 'x86_64')
) AS monthly
"#;

/// Cost per trace: the trace's invocations summed, with the root span's
/// service, name and `http.route`, so traces and routes rank by cost.
const TRACE_COSTS_SQL: &str = r#"
SELECT
  i.trace_id, i.time, r.root_service_name, r.root_name, r.route,
  i.invocations, i.functions, i.cold_starts, i.errors,
  i.billed_duration_ms, i.cost_usd, i.cost_estimated
FROM (
  SELECT
    trace_id,
    min(time) AS time,
    count(*) AS invocations,
    count(DISTINCT function_name) AS functions,
    sum(CASE WHEN cold_start THEN 1 ELSE 0 END) AS cold_starts,
    sum(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END) AS errors,
    sum(billed_duration_ms) AS billed_duration_ms,
    sum(cost_usd) AS cost_usd,
    coalesce(bool_or(cost_estimated), false) AS cost_estimated
  FROM invocations
  WHERE trace_id IS NOT NULL
  GROUP BY trace_id
) AS i
LEFT JOIN (
  SELECT
    trace_id,
    first_value(service_name ORDER BY time) AS root_service_name,
    first_value(name ORDER BY time) AS root_name,
    first_value(attributes['http.route'] ORDER BY time) AS route
  FROM spans
  WHERE parent_span_id IS NULL
  GROUP BY trace_id
) AS r ON i.trace_id = r.trace_id
"#;

/// The views' plans, made once per engine and shared by every session (a
/// plan reads its tables' snapshots when it runs, so it never goes stale).
#[derive(Debug, Clone)]
pub struct ViewPlans {
    pub invocations: Arc<InvocationsView>,
    views: Vec<(&'static str, LogicalPlan)>,
    function_stats_ranged: LogicalPlan,
}

impl ViewPlans {
    /// Plans every view in `ctx` (trusted SQL, before the read-only
    /// options apply to user statements); `invocations` makes the
    /// `invocations` view from its merge plan.
    pub async fn plan(
        ctx: &SessionContext,
        invocations: impl FnOnce(LogicalPlan) -> InvocationsView,
    ) -> Result<ViewPlans, QueryError> {
        let merge = ctx.sql(INVOCATIONS_SQL).await?.into_unoptimized_plan();
        let invocations = Arc::new(invocations(merge));
        ctx.register_table(
            "invocations",
            Arc::clone(&invocations) as Arc<dyn TableProvider>,
        )?;
        let mut views = Vec::new();
        // In dependency order: later views read earlier ones.
        let all_time = FUNCTION_STATS_SQL.replace("{range}", "");
        for (name, sql) in [
            ("function_stats", all_time.as_str()),
            ("monthly_costs", MONTHLY_COSTS_SQL),
            ("trace_costs", TRACE_COSTS_SQL),
        ] {
            let plan = ctx.sql(sql).await?.into_unoptimized_plan();
            ctx.register_table(name, Arc::new(ViewTable::new(plan.clone(), None)))?;
            views.push((name, plan));
        }
        let ranged = FUNCTION_STATS_SQL.replace("{range}", FUNCTION_STATS_RANGE);
        let function_stats_ranged = ctx.sql(&ranged).await?.into_unoptimized_plan();
        Ok(ViewPlans {
            invocations,
            views,
            function_stats_ranged,
        })
    }

    /// Registers the planned views in a session.
    pub fn register(&self, ctx: &SessionContext) -> Result<(), QueryError> {
        ctx.register_table(
            "invocations",
            Arc::clone(&self.invocations) as Arc<dyn TableProvider>,
        )?;
        for (name, plan) in &self.views {
            ctx.register_table(*name, Arc::new(ViewTable::new(plan.clone(), None)))?;
        }
        ctx.register_udtf(
            "function_stats",
            Arc::new(FunctionStatsFn {
                plan: self.function_stats_ranged.clone(),
            }),
        );
        Ok(())
    }
}

/// `function_stats(since)` or `function_stats(start, end)`: the summary over
/// a time range. `since` is a duration back from now (`'24h'`, `'7d'`,
/// `INTERVAL '1 day'`); `start`/`end` are timestamps (or RFC 3339 text).
#[derive(Debug)]
struct FunctionStatsFn {
    plan: LogicalPlan,
}

impl TableFunctionImpl for FunctionStatsFn {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let now = chrono::Utc::now().timestamp_micros();
        let values = args
            .exprs()
            .iter()
            .map(|e| constant(args.session(), e))
            .collect::<DfResult<Vec<_>>>()?;
        let (start, end) = match values.as_slice() {
            [since] => (bound(since, now, true)?, now),
            [start, end] => (bound(start, now, true)?, bound(end, now, false)?),
            _ => {
                return Err(DataFusionError::Plan(
                    "function_stats takes (since) or (start, end), e.g. function_stats('24h')"
                        .into(),
                ));
            }
        };
        let utc = Some(Arc::from("+00:00"));
        let plan = self.plan.clone().with_param_values(vec![
            ScalarValue::TimestampMicrosecond(Some(start), utc.clone()),
            ScalarValue::TimestampMicrosecond(Some(end), utc),
        ])?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

/// Evaluates a constant argument (`now() - INTERVAL '1 day'` included).
fn constant(session: &dyn Session, expr: &Expr) -> DfResult<ScalarValue> {
    let schema = DFSchema::empty();
    let physical = session.create_physical_expr(expr.clone(), &schema)?;
    let batch = RecordBatch::try_new_with_options(
        Arc::new(arrow::datatypes::Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    match physical.evaluate(&batch)? {
        ColumnarValue::Scalar(v) => Ok(v),
        ColumnarValue::Array(a) => ScalarValue::try_from_array(&a, 0),
    }
}

/// One time bound in µs: a timestamp, RFC 3339 text, or (for the start) a
/// duration back from `now`.
fn bound(value: &ScalarValue, now: i64, may_be_duration: bool) -> DfResult<i64> {
    let bad = || {
        DataFusionError::Plan(format!(
            "function_stats: {value} is not a timestamp{}",
            if may_be_duration {
                " or a duration like '24h'"
            } else {
                ""
            }
        ))
    };
    let micros_back = |m: i64| now.checked_sub(m).ok_or_else(bad);
    match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => {
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
                return Ok(t.timestamp_micros());
            }
            if may_be_duration && let Ok(d) = humantime::parse_duration(s) {
                return micros_back(i64::try_from(d.as_micros()).map_err(|_| bad())?);
            }
            let ts = ScalarValue::Utf8(Some(s.clone()))
                .cast_to(&DataType::Timestamp(TimeUnit::Microsecond, None))
                .map_err(|_| bad())?;
            bound(&ts, now, false)
        }
        ScalarValue::IntervalMonthDayNano(Some(v)) if may_be_duration => {
            let days = i64::from(v.months) * 30 + i64::from(v.days);
            micros_back(days * 86_400_000_000 + v.nanoseconds / 1000)
        }
        ScalarValue::IntervalDayTime(Some(v)) if may_be_duration => {
            micros_back(i64::from(v.days) * 86_400_000_000 + i64::from(v.milliseconds) * 1000)
        }
        ScalarValue::TimestampSecond(Some(_), _)
        | ScalarValue::TimestampMillisecond(Some(_), _)
        | ScalarValue::TimestampMicrosecond(Some(_), _)
        | ScalarValue::TimestampNanosecond(Some(_), _)
        | ScalarValue::Date32(Some(_)) => {
            match value.cast_to(&DataType::Timestamp(TimeUnit::Microsecond, None))? {
                ScalarValue::TimestampMicrosecond(Some(m), _) => Ok(m),
                _ => Err(bad()),
            }
        }
        _ => Err(bad()),
    }
}
