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
//! The view regroups all records on every query; coalescing settled records
//! at flush time is future work (see the benchmark report).

use datafusion::prelude::SessionContext;

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

/// Registers the views in a fresh session (trusted SQL, before the
/// read-only options apply to user statements).
pub async fn register(ctx: &SessionContext) -> Result<(), QueryError> {
    let view = ctx.sql(INVOCATIONS_SQL).await?.into_view();
    ctx.register_table("invocations", view)?;
    Ok(())
}
