//! Counters and histograms rendered as Prometheus text on `/metrics`.
//! Kept dependency-free: a few atomics per series.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bucket upper bounds in seconds shared by every latency histogram.
const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram in seconds.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        for (i, b) in BOUNDS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            d.as_micros().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BOUNDS.iter().enumerate() {
            let n = self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {n}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {sum}\n{name}_count{braces} {count}"
        );
    }
}

pub fn render_counter(out: &mut String, name: &str, help: &str, series: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (labels, v) in series {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

pub fn render_gauge(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

/// Per-signal ingest counters.
#[derive(Debug, Default)]
pub struct SignalCounters {
    pub received: Counter,
    pub accepted: Counter,
    pub rejected: Counter,
    pub refused_requests: Counter,
}

/// Everything the collector counts.
#[derive(Debug, Default)]
pub struct CollectorMetrics {
    pub traces: SignalCounters,
    pub logs: SignalCounters,
    pub metrics: SignalCounters,
    /// Rows of `POST /v1/invocations`.
    pub invocations: SignalCounters,
    /// Events of `POST /v1/lambda/telemetry`.
    pub lambda_telemetry: SignalCounters,
    /// Log events of `POST /v1/firehose`.
    pub firehose: SignalCounters,
    /// Events read by the CloudWatch Logs poller.
    pub cloudwatch: SignalCounters,
    pub cloudwatch_polls: Counter,
    pub cloudwatch_errors: Counter,
    pub cloudwatch_throttled: Counter,
    pub cloudwatch_groups: Gauge,
    pub wal_bytes_written: Counter,
    pub wal_fsync: Histogram,
    pub wal_group_requests: Counter,
    pub wal_size_bytes: Gauge,
    pub buffer_rows: Gauge,
    pub buffer_bytes: Gauge,
    pub flush: Histogram,
    pub flush_failures: Counter,
    pub flushed_rows: Counter,
    pub overloaded: Counter,
    /// The connection budget of `serve` (none in other commands).
    pub connections: std::sync::OnceLock<std::sync::Arc<crate::connections::ConnectionBudget>>,
}

impl CollectorMetrics {
    pub fn signal(&self, s: crate::decode::otlp::Signal) -> &SignalCounters {
        use crate::decode::otlp::Signal;
        match s {
            Signal::Traces => &self.traces,
            Signal::Logs => &self.logs,
            Signal::Metrics => &self.metrics,
        }
    }

    pub fn render(&self, out: &mut String) {
        let sig = [
            ("traces", &self.traces),
            ("logs", &self.logs),
            ("metrics", &self.metrics),
        ];
        for (name, help, get) in [
            (
                "faasight_ingest_items_received_total",
                "items received per signal",
                (|c: &SignalCounters| c.received.get()) as fn(&SignalCounters) -> u64,
            ),
            (
                "faasight_ingest_items_accepted_total",
                "items stored per signal",
                |c| c.accepted.get(),
            ),
            (
                "faasight_ingest_items_rejected_total",
                "items refused per signal (partial success)",
                |c| c.rejected.get(),
            ),
            (
                "faasight_ingest_requests_refused_total",
                "whole requests refused per signal",
                |c| c.refused_requests.get(),
            ),
        ] {
            let labels: Vec<(String, u64)> = sig
                .iter()
                .map(|(s, c)| (format!("signal=\"{s}\""), get(c)))
                .collect();
            let series: Vec<(&str, u64)> = labels.iter().map(|(l, v)| (l.as_str(), *v)).collect();
            render_counter(out, name, help, &series);
        }
        render_counter(
            out,
            "faasight_wal_bytes_written_total",
            "bytes appended to the WAL",
            &[("", self.wal_bytes_written.get())],
        );
        render_counter(
            out,
            "faasight_wal_group_commit_requests_total",
            "requests acknowledged by WAL group commits",
            &[("", self.wal_group_requests.get())],
        );
        self.wal_fsync
            .render(out, "faasight_wal_fsync_seconds", "WAL fsync latency", "");
        render_gauge(
            out,
            "faasight_wal_size_bytes",
            "bytes in WAL segments not yet flushed",
            self.wal_size_bytes.get(),
        );
        render_gauge(
            out,
            "faasight_buffer_rows",
            "rows in the in-memory buffer",
            self.buffer_rows.get(),
        );
        render_gauge(
            out,
            "faasight_buffer_bytes",
            "bytes in the in-memory buffer",
            self.buffer_bytes.get(),
        );
        self.flush.render(
            out,
            "faasight_flush_seconds",
            "duration of buffer flushes to Parquet",
            "",
        );
        render_counter(
            out,
            "faasight_flush_failures_total",
            "failed flushes (retried)",
            &[("", self.flush_failures.get())],
        );
        render_counter(
            out,
            "faasight_flushed_rows_total",
            "rows written to Parquet",
            &[("", self.flushed_rows.get())],
        );
        render_counter(
            out,
            "faasight_cloudwatch_polls_total",
            "completed CloudWatch Logs polls",
            &[("", self.cloudwatch_polls.get())],
        );
        render_counter(
            out,
            "faasight_cloudwatch_errors_total",
            "failed CloudWatch Logs polls",
            &[("", self.cloudwatch_errors.get())],
        );
        render_counter(
            out,
            "faasight_cloudwatch_throttled_total",
            "CloudWatch Logs calls throttled and retried",
            &[("", self.cloudwatch_throttled.get())],
        );
        render_gauge(
            out,
            "faasight_cloudwatch_log_groups",
            "log groups the poller reads",
            self.cloudwatch_groups.get(),
        );
        render_counter(
            out,
            "faasight_ingest_overloaded_total",
            "requests refused with 429/503 under back-pressure",
            &[("", self.overloaded.get())],
        );
        if let Some(budget) = self.connections.get() {
            render_gauge(
                out,
                "faasight_connections_open",
                "client connections open on all ports",
                budget.open() as u64,
            );
            render_gauge(
                out,
                "faasight_connections_limit",
                "client connections the open-file limit allows",
                budget.limit() as u64,
            );
            render_counter(
                out,
                "faasight_connections_refused_total",
                "connections closed at once because the limit was reached",
                &[("", budget.refused_total())],
            );
        }
    }
}
