//! `faasight generate`: a realistic synthetic data set written straight to
//! Parquet through the collector's committed-flush path (one flush per hour
//! of data), for demos, dashboards and benchmarks.
//!
//! The model, per function: a memory size, architecture, runtime, region,
//! account, trigger, typical duration and memory use, error and timeout
//! rates, versions deployed during the period (some slower than the one
//! before), and for some provisioned concurrency. Traffic follows a Zipf law
//! across functions and a diurnal (and weekly) curve over time. Cold starts
//! come after idle gaps and when load rises from one hour to the next
//! (rarely for provisioned functions). Billed duration follows Lambda's
//! rules for the date (INIT billed since 2025-08-01). A share of the HTTP
//! entry functions' requests are traced: the entry calls one to three other
//! functions in turn, and every invocation of the trace has its handler
//! span (with `faas.*` attributes) and, in the caller, a client span.
//! Provisioned functions also get Lambda's `ProvisionedConcurrencyUtilization`
//! and `ProvisionedConcurrentExecutions` metrics every 5 minutes, shaped as a
//! CloudWatch metric stream sends them (OTLP summaries), from the time their
//! invocations kept an allocation of 1 to 8 instances busy.
//!
//! The same `--seed` and `--until` give the same files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Datelike, Timelike, Utc};
use faasight_collector::decode::invocations::{InvocationRecord, RecordColumns, SOURCE_REPORT};
use faasight_collector::decode::metric_stream;
use faasight_collector::decode::otlp::{metrics, spans};
use faasight_collector::ingest::Limits;
use faasight_collector::model::Table;
use faasight_collector::{Collector, CollectorConfig};
use faasight_query::engine::{QueryConfig, QueryEngine};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::BoxError;

#[derive(Debug, clap::Args)]
pub(crate) struct GenerateArgs {
    /// Number of invocations to write
    #[arg(long)]
    invocations: u64,
    /// Number of functions
    #[arg(long, default_value_t = 50)]
    functions: usize,
    /// Days of data, ending at --until
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// Random seed: the same seed (and --until) gives the same data
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// End of the data set, RFC 3339 [default: now, to the hour]
    #[arg(long)]
    until: Option<String>,
    /// Share of HTTP entry requests that are traced across functions
    #[arg(long, default_value_t = 0.05)]
    trace_share: f64,
    /// Data directory to write to (no server may be running on it)
    #[arg(long, env = "FAASIGHT_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
}

const MICROS_PER_HOUR: i64 = 3_600_000_000;
/// Longest a generated request runs (an entry and three calls, each cut at
/// its timeout of at most 30 s), so requests start this long before the end.
const TRACE_ROOM: i64 = 150_000_000;
/// INIT is billed for on-demand functions from this date.
const INIT_BILLED_FROM: i64 = 1_753_999_200_000_000; // 2025-08-01T00:00:00Z

const NAMES: &[&str] = &[
    "api-checkout",
    "api-orders",
    "api-search",
    "api-login",
    "api-cart",
    "payments-charge",
    "inventory-reserve",
    "image-resize",
    "email-sender",
    "orders-worker",
    "report-builder",
    "nightly-export",
    "auth-authorizer",
    "webhook-ingest",
    "pdf-render",
    "recommendations",
    "fraud-score",
    "shipping-quote",
    "stream-processor",
    "audit-log",
];
const REGIONS: &[(&str, f64)] = &[
    ("us-east-1", 0.55),
    ("eu-west-1", 0.2),
    ("eu-central-1", 0.15),
    ("eu-south-1", 0.1),
];
const ACCOUNTS: &[&str] = &["111122223333", "444455556666", "777788889999"];
const MEMORY: &[(i64, f64)] = &[
    (128, 0.15),
    (256, 0.15),
    (512, 0.2),
    (1024, 0.2),
    (1536, 0.08),
    (2048, 0.1),
    (3008, 0.06),
    (4096, 0.03),
    (10240, 0.03),
];
/// Runtime, share, median init ms.
const RUNTIMES: &[(&str, f64, f64)] = &[
    ("python3.12", 0.35, 320.0),
    ("nodejs22.x", 0.35, 210.0),
    ("java21", 0.12, 1900.0),
    ("provided.al2023", 0.1, 70.0),
    ("dotnet8", 0.08, 900.0),
];
const ERRORS: &[&str] = &[
    "Runtime.HandlerError",
    "Runtime.UnhandledPromiseRejection",
    "Runtime.ExitError",
    "Function.ResponseSizeTooLarge",
];

#[derive(Debug)]
struct Function {
    name: String,
    memory_mb: i64,
    arm64: bool,
    runtime: &'static str,
    init_median_ms: f64,
    region: &'static str,
    account: &'static str,
    trigger: &'static str,
    median_ms: f64,
    /// Typical share of memory used.
    memory_use: f64,
    error_rate: f64,
    timeout_ms: f64,
    timeout_rate: f64,
    oom_rate: f64,
    provisioned: bool,
    /// Idle gap after which the environment is gone.
    idle_ms: i64,
    base_cold: f64,
    /// (from µs, version, duration factor).
    versions: Vec<(i64, String, f64)>,
    // State.
    last_micros: Option<i64>,
}

impl Function {
    fn version_at(&self, t: i64) -> (&str, f64) {
        let mut current = (self.versions[0].1.as_str(), self.versions[0].2);
        for (from, v, factor) in &self.versions {
            if *from <= t {
                current = (v.as_str(), *factor);
            }
        }
        current
    }
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [(T, f64)]) -> &'a T {
    let total: f64 = items.iter().map(|(_, w)| w).sum();
    let mut x = rng.random::<f64>() * total;
    for (item, w) in items {
        if x < *w {
            return item;
        }
        x -= w;
    }
    &items[items.len() - 1].0
}

/// Standard normal (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn lognormal(rng: &mut ChaCha8Rng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

fn hex(rng: &mut ChaCha8Rng, bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// A Lambda request id: 16 random bytes in the UUID layout.
fn request_id(rng: &mut ChaCha8Rng) -> String {
    uuid::Uuid::from_bytes(std::array::from_fn(|_| rng.random::<u8>())).to_string()
}

fn functions(rng: &mut ChaCha8Rng, count: usize, start: i64, end: i64) -> Vec<Function> {
    (0..count)
        .map(|i| {
            let base = NAMES[i % NAMES.len()];
            let name = if i < NAMES.len() {
                base.to_string()
            } else {
                format!("{base}-{}", i / NAMES.len() + 1)
            };
            let &(runtime, _, init) = {
                let weighted: Vec<_> = RUNTIMES.iter().map(|r| (r, r.1)).collect();
                *pick(rng, &weighted)
            };
            let trigger = if base.starts_with("api-") || base == "auth-authorizer" {
                "http"
            } else if base.contains("nightly") || base.contains("report") {
                "timer"
            } else if base.contains("worker") || base.contains("stream") {
                "pubsub"
            } else {
                "datasource"
            };
            let memory_mb = *pick(rng, MEMORY);
            // A third over-provisioned, a few near the limit.
            let memory_use = match rng.random::<f64>() {
                x if x < 0.35 => 0.08 + rng.random::<f64>() * 0.2,
                x if x < 0.9 => 0.35 + rng.random::<f64>() * 0.4,
                _ => 0.86 + rng.random::<f64>() * 0.1,
            };
            let near_limit = memory_use > 0.85;
            let mut versions = vec![(start, "1".to_string(), 1.0)];
            let deploys = rng.random_range(0..3);
            let mut from = start;
            for v in 0..deploys {
                from += rng.random_range(0..((end - from) / 2).max(1));
                let factor = if rng.random::<f64>() < 0.3 {
                    1.35
                } else {
                    0.95
                };
                let previous = versions.last().map_or(1.0, |p| p.2);
                versions.push((from, (v + 2).to_string(), previous * factor));
            }
            Function {
                name,
                memory_mb,
                arm64: rng.random::<f64>() < 0.35,
                runtime,
                init_median_ms: init,
                region: pick::<&str>(rng, REGIONS),
                account: ACCOUNTS[rng.random_range(0..ACCOUNTS.len())],
                trigger,
                median_ms: lognormal(rng, 120.0, 1.0).clamp(3.0, 5000.0),
                memory_use,
                error_rate: lognormal(rng, 0.004, 1.0).min(0.08),
                timeout_ms: [3000.0, 6000.0, 15000.0, 30000.0][rng.random_range(0..4)],
                timeout_rate: if rng.random::<f64>() < 0.2 {
                    0.003
                } else {
                    0.0
                },
                oom_rate: if near_limit { 0.002 } else { 0.0 },
                provisioned: rng.random::<f64>() < 0.08,
                idle_ms: rng.random_range(8..45) * 60_000,
                base_cold: lognormal(rng, 0.004, 0.6).min(0.05),
                versions,
                last_micros: None,
            }
        })
        .collect()
}

/// Relative load of the hour starting at `t` (UTC): a day curve peaking in
/// the afternoon and quieter weekends.
fn hour_weight(t: i64) -> f64 {
    let Some(dt) = DateTime::<Utc>::from_timestamp_micros(t) else {
        return 1.0;
    };
    let hour = f64::from(dt.hour());
    let day = 1.0 + 0.7 * ((hour - 9.0) / 24.0 * std::f64::consts::TAU).sin();
    let weekend = if dt.weekday().number_from_monday() >= 6 {
        0.65
    } else {
        1.0
    };
    day * weekend
}

/// Zipf (s = 1.1) cumulative weights over function ranks.
fn zipf_cdf(n: usize) -> Vec<f64> {
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = (0..n)
        .map(|i| {
            acc += 1.0 / ((i + 1) as f64).powf(1.1);
            acc
        })
        .collect();
    for c in &mut cdf {
        *c /= acc;
    }
    cdf
}

fn zipf(rng: &mut ChaCha8Rng, cdf: &[f64]) -> usize {
    let x: f64 = rng.random();
    cdf.partition_point(|&c| c < x).min(cdf.len() - 1)
}

struct Generator {
    rng: ChaCha8Rng,
    funcs: Vec<Function>,
    cdf: Vec<f64>,
    /// Indices of non-HTTP functions a traced request can call.
    downstream: Vec<usize>,
    trace_share: f64,
    /// Load ratio of this hour to the one before, for cold starts.
    rising: f64,
    records: RecordColumns,
    spans: Vec<ResourceSpans>,
    made: u64,
    /// Provisioned instances per function (0: on demand only).
    allocated: Vec<u32>,
    /// (function, 5-minute slot) → milliseconds of invocations begun in it.
    busy_ms: BTreeMap<(usize, i64), f64>,
}

/// Period of the provisioned concurrency metrics, as CloudWatch's.
const METRIC_PERIOD: i64 = 300 * 1_000_000;

/// One invocation decided by the model.
struct Made {
    start: i64,
    duration_ms: f64,
    is_error: bool,
    cold: bool,
    request_id: String,
}

impl Generator {
    /// One invocation of `f` at `start`; `waiting_ms` is time spent in
    /// calls to other functions, billed like the function's own work.
    fn invoke(&mut self, f: usize, start: i64, trace_id: Option<&str>, waiting_ms: f64) -> Made {
        let rng = &mut self.rng;
        let func = &mut self.funcs[f];
        let idle = func
            .last_micros
            .is_none_or(|last| start - last > func.idle_ms * 1000);
        func.last_micros = Some(start);
        let mut p_cold = func.base_cold * (1.0 + 4.0 * (self.rising - 1.0).max(0.0));
        if func.provisioned {
            p_cold *= 0.05;
        }
        let cold = (idle && !func.provisioned) || rng.random::<f64>() < p_cold;
        let (version, factor) = func.version_at(start);
        let version = version.to_string();
        let mut duration = lognormal(rng, func.median_ms * factor, 0.45).max(0.5) + waiting_ms;
        let roll: f64 = rng.random();
        let (status, error_type) = if roll < func.timeout_rate || duration >= func.timeout_ms {
            // Lambda stops the function at its timeout.
            duration = func.timeout_ms;
            ("timeout", None)
        } else if roll < func.timeout_rate + func.oom_rate {
            ("oom", Some("Runtime.OutOfMemory"))
        } else if roll < func.timeout_rate + func.oom_rate + func.error_rate {
            ("error", Some(ERRORS[rng.random_range(0..ERRORS.len())]))
        } else {
            ("ok", None)
        };
        duration = (duration * 100.0).round() / 100.0;
        let init = cold.then(|| {
            (lognormal(
                rng,
                func.init_median_ms * (func.memory_mb as f64 / 1024.0).powf(-0.15),
                0.3,
            ) * 100.0)
                .round()
                / 100.0
        });
        let billed_init = if start >= INIT_BILLED_FROM {
            init.unwrap_or(0.0)
        } else {
            0.0
        };
        let billed = (duration + billed_init).ceil() as i64;
        let used = if status == "oom" {
            func.memory_mb
        } else {
            ((func.memory_mb as f64)
                * (func.memory_use * (1.0 + 0.08 * normal(rng))).clamp(0.03, 0.99))
            .round()
            .max(20.0) as i64
        };
        let request_id = request_id(rng);
        let record = InvocationRecord {
            time_micros: start,
            function_name: func.name.clone(),
            function_version: Some(version),
            provider: Some("aws".into()),
            region: Some(func.region.into()),
            account_id: Some(func.account.into()),
            request_id: request_id.clone(),
            trace_id: trace_id.map(str::to_string),
            trigger: Some(func.trigger.into()),
            cold_start: Some(cold),
            init_duration_ms: init,
            duration_ms: Some(duration),
            billed_duration_ms: Some(billed),
            memory_size_mb: Some(func.memory_mb),
            max_memory_used_mb: Some(used),
            architecture: Some(if func.arm64 { "arm64" } else { "x86_64" }.into()),
            runtime: Some(func.runtime.into()),
            status: Some(status.into()),
            error_type: error_type.map(str::to_string),
            source: SOURCE_REPORT,
        };
        self.records.append(&record);
        self.made += 1;
        if self.allocated[f] > 0 {
            *self
                .busy_ms
                .entry((f, start.div_euclid(METRIC_PERIOD)))
                .or_default() += duration;
        }
        Made {
            start,
            duration_ms: duration,
            is_error: status != "ok",
            cold,
            request_id,
        }
    }

    /// A request through `entry` and the functions it calls, with spans.
    fn traced(&mut self, entry: usize, start: i64, budget: u64) -> u64 {
        let trace_id = hex(&mut self.rng, 16);
        let calls = if self.downstream.is_empty() {
            0
        } else {
            (self.rng.random_range(1..=3) as u64).min(budget.saturating_sub(1))
        };
        // A little work, then each call in turn, then the entry finishes
        // (its duration includes the time spent waiting on the calls).
        // Lambda stops the entry at its timeout: no call starts after it,
        // and a call still out then ends with it, unanswered (the callee
        // runs on).
        let entry_span = hex(&mut self.rng, 8);
        let mut spans = Vec::new();
        let deadline = start + (self.funcs[entry].timeout_ms * 1000.0) as i64;
        let mut cursor = start + self.rng.random_range(2_000..30_000);
        let mut made_calls = 0;
        for _ in 0..calls {
            if cursor + 2_000 >= deadline {
                break;
            }
            made_calls += 1;
            let callee = self.downstream[self.rng.random_range(0..self.downstream.len())];
            let client_span = hex(&mut self.rng, 8);
            let child_start = cursor + 2_000;
            let child = self.invoke(callee, child_start, Some(&trace_id), 0.0);
            let child_end = child_start + (child.duration_ms * 1000.0) as i64;
            let callee_name = self.funcs[callee].name.clone();
            spans.push((
                entry,
                span_of(
                    &trace_id,
                    &client_span,
                    &entry_span,
                    &format!("invoke {callee_name}"),
                    span::SpanKind::Client,
                    cursor,
                    (child_end + 2_000).min(deadline),
                    child_end + 2_000 > deadline,
                    vec![
                        kv("rpc.service", "Lambda"),
                        kv("faas.invoked_name", &callee_name),
                    ],
                ),
            ));
            let handler_span = hex(&mut self.rng, 8);
            spans.push((
                callee,
                self.handler_span(callee, &trace_id, &handler_span, &client_span, &child),
            ));
            cursor = child_end + 3_000;
        }
        let waiting_ms = (cursor - start) as f64 / 1000.0;
        let own = self.invoke(entry, start, Some(&trace_id), waiting_ms);
        spans.push((
            entry,
            self.handler_span(entry, &trace_id, &entry_span, "", &own),
        ));
        for (f, s) in spans {
            let func = &self.funcs[f];
            self.spans.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", &func.name),
                        kv("faas.name", &func.name),
                        kv("cloud.provider", "aws"),
                        kv("cloud.platform", "aws_lambda"),
                        kv("cloud.region", func.region),
                        kv("cloud.account.id", func.account),
                        kv(
                            "faas.max_memory",
                            &(func.memory_mb * 1024 * 1024).to_string(),
                        ),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![s],
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        1 + made_calls
    }

    fn handler_span(
        &self,
        f: usize,
        trace_id: &str,
        span_id: &str,
        parent: &str,
        made: &Made,
    ) -> Span {
        let end = made.start + (made.duration_ms * 1000.0) as i64;
        let func = &self.funcs[f];
        let route = format!("/{}", func.name.trim_start_matches("api-"));
        let mut attributes = vec![
            kv("faas.invocation_id", &made.request_id),
            kv("faas.trigger", func.trigger),
            bool_kv("faas.coldstart", made.cold),
        ];
        if func.trigger == "http" {
            attributes.push(kv("http.route", &route));
            attributes.push(kv("http.request.method", "POST"));
        }
        span_of(
            trace_id,
            span_id,
            parent,
            &func.name,
            span::SpanKind::Server,
            made.start,
            end,
            made.is_error,
            attributes,
        )
    }

    /// The provisioned concurrency metrics of the 5-minute periods that
    /// begin in `[from, to)` and end by `until`: average executions are the
    /// busy time over the period, utilization those over the allocation.
    fn provisioned_metrics(
        &mut self,
        from: i64,
        to: i64,
        until: i64,
    ) -> ExportMetricsServiceRequest {
        let mut metrics = Vec::new();
        for (f, &allocated) in self.allocated.iter().enumerate() {
            if allocated == 0 {
                continue;
            }
            let name = self.funcs[f].name.as_str();
            let resource = format!("{name}:live");
            let dimensions = [("FunctionName", name), ("Resource", resource.as_str())];
            let first =
                from.div_euclid(METRIC_PERIOD) + i64::from(from.rem_euclid(METRIC_PERIOD) != 0);
            let mut slot = first;
            while slot * METRIC_PERIOD < to && (slot + 1) * METRIC_PERIOD <= until {
                let busy = self.busy_ms.remove(&(f, slot)).unwrap_or(0.0);
                let running = (busy / (METRIC_PERIOD / 1000) as f64).min(f64::from(allocated));
                // One sample per period: minimum, maximum and sum are it.
                let sample = |metric_name: &'static str, value: f64| {
                    metric_stream::metric(&metric_stream::Statistics {
                        namespace: "AWS/Lambda",
                        metric_name,
                        dimensions: &dimensions,
                        unit: "None",
                        start_nanos: (slot * METRIC_PERIOD * 1000) as u64,
                        end_nanos: ((slot + 1) * METRIC_PERIOD * 1000) as u64,
                        count: 1,
                        sum: value,
                        min: value,
                        max: value,
                    })
                };
                metrics.push(sample(
                    "ProvisionedConcurrencyUtilization",
                    running / f64::from(allocated),
                ));
                metrics.push(sample("ProvisionedConcurrentExecutions", running));
                slot += 1;
            }
        }
        self.busy_ms
            .retain(|(_, slot), _| slot * METRIC_PERIOD >= to);
        metric_stream::request(None, None, metrics)
    }

    fn take_batches(
        &mut self,
        from: i64,
        to: i64,
        until: i64,
    ) -> Result<Vec<(Table, Vec<RecordBatch>)>, BoxError> {
        let mut out = Vec::new();
        let pc = metrics::normalize(&self.provisioned_metrics(from, to, until))?;
        for tb in pc.batches {
            if tb.batch.num_rows() > 0 {
                out.push((tb.table, vec![tb.batch]));
            }
        }
        let records = std::mem::take(&mut self.records);
        let mut invocation_batches = Vec::new();
        if !records.is_empty() {
            invocation_batches.push(records.finish()?);
        }
        if !self.spans.is_empty() {
            let req = ExportTraceServiceRequest {
                resource_spans: std::mem::take(&mut self.spans),
            };
            let normalized = spans::normalize(&req)?;
            for tb in normalized.batches {
                if tb.table == Table::InvocationRecords {
                    invocation_batches.push(tb.batch);
                } else {
                    out.push((tb.table, vec![tb.batch]));
                }
            }
        }
        if !invocation_batches.is_empty() {
            out.push((Table::InvocationRecords, invocation_batches));
        }
        Ok(out)
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn bool_kv(key: &str, value: bool) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::BoolValue(value)),
        }),
        ..Default::default()
    }
}

fn id_bytes(hex_id: &str) -> Vec<u8> {
    (0..hex_id.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex_id[2 * i..2 * i + 2], 16).ok())
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn span_of(
    trace_id: &str,
    span_id: &str,
    parent: &str,
    name: &str,
    kind: span::SpanKind,
    start_micros: i64,
    end_micros: i64,
    is_error: bool,
    attributes: Vec<KeyValue>,
) -> Span {
    Span {
        trace_id: id_bytes(trace_id),
        span_id: id_bytes(span_id),
        parent_span_id: id_bytes(parent),
        name: name.into(),
        kind: kind as i32,
        start_time_unix_nano: (start_micros * 1000) as u64,
        end_time_unix_nano: (end_micros.max(start_micros) * 1000) as u64,
        attributes,
        status: is_error.then(|| Status {
            code: 2,
            message: "error".into(),
        }),
        ..Default::default()
    }
}

pub(crate) async fn run(args: GenerateArgs) -> Result<(), BoxError> {
    if args.functions == 0 {
        return Err("--functions must be at least 1".into());
    }
    if args.days == 0 {
        return Err("--days must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&args.trace_share) {
        return Err("--trace-share must be between 0 and 1".into());
    }
    let until = match &args.until {
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map_err(|e| format!("--until {s:?}: {e}"))?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    // The hour holding the last microsecond before `until`.
    let end_hour = (until.timestamp_micros() - 1).div_euclid(MICROS_PER_HOUR);
    let hours = i64::from(args.days) * 24;
    let first_hour = end_hour - hours + 1;
    let start = first_hour * MICROS_PER_HOUR;
    let end = until.timestamp_micros();

    let (collector, _) = Collector::open(CollectorConfig {
        data_dir: args.data_dir.clone(),
        limits: Limits {
            max_buffer_bytes: 256 << 20,
            max_wal_bytes: 1 << 30,
        },
    })?;

    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let funcs = functions(&mut rng, args.functions, start, end);
    // Drawn apart so the rest of the data set does not change with it.
    let mut pc_rng = ChaCha8Rng::seed_from_u64(args.seed ^ 0x7063);
    let allocated = funcs
        .iter()
        .map(|f| {
            if f.provisioned {
                pc_rng.random_range(1..=8)
            } else {
                0
            }
        })
        .collect();
    let downstream = (0..funcs.len())
        .filter(|&i| funcs[i].trigger != "http")
        .collect();
    let mut g = Generator {
        rng,
        cdf: zipf_cdf(funcs.len()),
        funcs,
        downstream,
        trace_share: args.trace_share,
        rising: 1.0,
        records: RecordColumns::default(),
        spans: Vec::new(),
        made: 0,
        allocated,
        busy_ms: BTreeMap::new(),
    };

    // Invocations per hour: proportional to the load curve, the remainder
    // spread over the first hours so the total is exact.
    let weights: Vec<f64> = (0..hours)
        .map(|h| hour_weight((first_hour + h) * MICROS_PER_HOUR))
        .collect();
    let total_weight: f64 = weights.iter().sum();
    let mut per_hour: Vec<u64> = weights
        .iter()
        .map(|w| (args.invocations as f64 * w / total_weight).floor() as u64)
        .collect();
    let assigned: u64 = per_hour.iter().sum();
    let hours_len = per_hour.len() as u64;
    for i in 0..args.invocations.saturating_sub(assigned) {
        per_hour[(i % hours_len) as usize] += 1;
    }

    let bar = indicatif::ProgressBar::new(args.invocations);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} invocations ({per_sec}, eta {eta})",
    )?);
    let mut files = 0;
    let mut previous = per_hour.first().copied().unwrap_or(0).max(1);
    for (h, &count) in per_hour.iter().enumerate() {
        let hour_start = (first_hour + h as i64) * MICROS_PER_HOUR;
        let hour_len = if h as i64 == hours - 1 {
            // Leave room for a trace's calls to finish before `until`.
            let room = (end - hour_start).clamp(1, MICROS_PER_HOUR);
            if room > 2 * TRACE_ROOM {
                room - TRACE_ROOM
            } else {
                room
            }
        } else {
            MICROS_PER_HOUR
        };
        g.rising = count as f64 / previous as f64;
        previous = count.max(1);
        let mut starts: Vec<i64> = (0..count)
            .map(|_| hour_start + g.rng.random_range(0..hour_len))
            .collect();
        starts.sort_unstable();
        let mut made = 0;
        for t in starts {
            if made >= count {
                break;
            }
            let f = zipf(&mut g.rng, &g.cdf);
            let traced = g.funcs[f].trigger == "http" && g.rng.random::<f64>() < g.trace_share;
            made += if traced {
                g.traced(f, t, count - made)
            } else {
                g.invoke(f, t, None, 0.0);
                1
            };
        }
        let batches = g.take_batches(hour_start, hour_start + MICROS_PER_HOUR, end)?;
        let report = collector.flusher.import(batches).await?;
        files += report.files;
        bar.set_position(g.made);
    }
    bar.finish_and_clear();
    let report = collector.flusher.flush().await?;
    files += report.files;
    // The settled hours are merged into `invocations` files now, as the
    // server would in the background.
    let engine = QueryEngine::new(
        collector.buffer.clone(),
        QueryConfig {
            data_dir: Some(args.data_dir.clone()),
            ..QueryConfig::default()
        },
    )?;
    let coalesced = engine.coalesce_invocations(usize::MAX).await?;
    engine.purge_replaced_files();
    println!(
        "generated {} invocations of {} functions over {} days into {} ({} files, {} hours coalesced)",
        g.made,
        g.funcs.len(),
        args.days,
        args.data_dir.display(),
        files,
        coalesced
    );
    Ok(())
}
