//! Ingest benchmark (a bench binary, not a criterion bench: it drives the
//! real server from this separate process over loopback).
//!
//! 1. In-process: decode + normalize + Parquet-encode the same payloads,
//!    on every core: the practical limit of the machine. Small requests
//!    are built in groups as the server's WAL writer builds them. Before
//!    it, the CPU time of each side apart: decoding on one thread (every
//!    request built on its own), the flush's sort + take + encode of
//!    204,800 spans.
//! 2. Load: start `faasight serve` (release), send OTLP/HTTP protobuf and
//!    OTLP/gRPC with batches of 1 and 512 spans at rising concurrency, and
//!    report spans/s, ack latency p50/p99, the server's peak RSS and the
//!    CPU time per acknowledged request of the server and of this process.
//!    HTTP and gRPC go through lean clients (prebuilt requests, see
//!    [`RawHttp`] and [`RawGrpc`]) unless `FAASIGHT_BENCH_CLIENT=reqwest`
//!    (reqwest and tonic).
//! 3. Disk: send a pool of unique Lambda-like spans once, stop the server
//!    with SIGTERM (flush) and divide the Parquet bytes by the span count.
//!
//! Run: `cargo bench --bench ingest` (`FAASIGHT_BENCH_SECS` per step,
//! default 5). Results print as markdown rows; the report is
//! `benches/ingest-report.md`. For profiling and A/B runs:
//! `FAASIGHT_BENCH_INPROCESS_ONLY=1` (step 1 only),
//! `FAASIGHT_BENCH_ONLY=http/512/4` (one load row, with the server's
//! flush and refusal counters), `FAASIGHT_BENCH_PROTOCOLS=http`,
//! `FAASIGHT_BENCH_DISK_ONLY=1` (step 3 only). `benches/support/phases.py`
//! sorts a `perf record` profile of the server into the report's phases.

mod support;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use faasight_collector::decode::otlp::spans;
use faasight_collector::decode::otlp::{self, Encoding, Signal};
use faasight_collector::instances::Instances;
use faasight_collector::model::{Table, TableBatch, UnbuiltSpans};
use faasight_collector::receive::grpc::RawCodec;
use faasight_collector::receive::now_micros;
use faasight_collector::storage::parquet::{
    Rows, concat_columns, partition_by_hour, sort_by_hour, write_parquet, writer_properties,
};
use faasight_collector::storage::take::take_rows;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use rustix::time::{ClockId, clock_gettime};

/// The allocator the server binary uses (src/main.rs), so the in-process
/// figure and the server's are compared on equal terms.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// xorshift64*: deterministic, dependency-free randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 24) as u8).collect()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

fn resource(function: usize) -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", s(&format!("orders-{function}"))),
            kv("faas.name", s(&format!("orders-{function}"))),
            kv("faas.version", s("$LATEST")),
            kv("faas.max_memory", Value::IntValue(536_870_912)),
            kv("cloud.provider", s("aws")),
            kv("cloud.platform", s("aws_lambda")),
            kv("cloud.region", s("eu-west-1")),
            kv("telemetry.sdk.language", s("python")),
        ],
        ..Default::default()
    }
}

/// One Lambda invocation: a handler span and three downstream calls.
fn invocation(rng: &mut Rng, start_ns: u64) -> Vec<Span> {
    let trace_id = rng.bytes(16);
    let root_id = rng.bytes(8);
    let total = 20_000_000 + rng.below(200_000_000);
    let request_id = {
        let b = rng.bytes(16);
        let h = hex::encode(b);
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    };
    let mut spans = vec![Span {
        trace_id: trace_id.clone(),
        span_id: root_id.clone(),
        name: "GET /orders/{id}".into(),
        kind: 2,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: start_ns + total,
        attributes: vec![
            kv("faas.invocation_id", s(&request_id)),
            kv("faas.trigger", s("http")),
            kv("faas.coldstart", Value::BoolValue(rng.below(50) == 0)),
            kv("http.route", s("/orders/{id}")),
            kv("http.request.method", s("GET")),
            kv("http.response.status_code", Value::IntValue(200)),
        ],
        status: Some(Status {
            code: 0,
            message: String::new(),
        }),
        ..Default::default()
    }];
    let children = [
        ("DynamoDB.GetItem", "dynamodb"),
        ("S3.PutObject", "s3"),
        ("POST", "http"),
    ];
    let mut t = start_ns + 1_000_000;
    for (name, system) in children {
        let d = 1_000_000 + rng.below(total / 4);
        spans.push(Span {
            trace_id: trace_id.clone(),
            span_id: rng.bytes(8),
            parent_span_id: root_id.clone(),
            name: name.into(),
            kind: 3,
            start_time_unix_nano: t,
            end_time_unix_nano: t + d,
            attributes: vec![kv("rpc.system", s("aws-api")), kv("aws.service", s(system))],
            ..Default::default()
        });
        t += d;
    }
    spans
}

/// Request bodies holding `total` unique spans, `batch` spans each.
fn payloads(total: usize, batch: usize, seed: u64) -> Vec<Bytes> {
    let mut rng = Rng(seed);
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // From the start of the previous hour: 204,800 spans cover 24 minutes,
    // so they land in one hour partition (one file) whatever the time of
    // day, and bytes per span compare from run to run.
    const HOUR_NS: u64 = 3_600_000_000_000;
    let first = now_ns - now_ns % HOUR_NS - HOUR_NS;
    let mut bodies = Vec::new();
    let mut pending: Vec<(usize, Span)> = Vec::new();
    let mut produced = 0;
    while produced < total {
        let function = rng.below(20) as usize;
        let start = first + (produced as u64) * 7_000_000;
        for sp in invocation(&mut rng, start) {
            pending.push((function, sp));
            produced += 1;
            if pending.len() == batch {
                bodies.push(encode(std::mem::take(&mut pending)));
            }
        }
    }
    if !pending.is_empty() {
        bodies.push(encode(pending));
    }
    bodies
}

fn encode(spans: Vec<(usize, Span)>) -> Bytes {
    let mut by_fn: std::collections::BTreeMap<usize, Vec<Span>> = Default::default();
    for (f, sp) in spans {
        by_fn.entry(f).or_default().push(sp);
    }
    let req = ExportTraceServiceRequest {
        resource_spans: by_fn
            .into_iter()
            .map(|(f, spans)| ResourceSpans {
                resource: Some(resource(f)),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    };
    Bytes::from(req.encode_to_vec())
}

/// Requests of up to `SMALL_REQUEST_SPANS` spans the server leaves unbuilt
/// until its WAL writer builds a group commit's worth together; the
/// in-process rows build them in groups of this many (a group commit at
/// 30k one-span requests/s and a ~1 ms sync holds about as many).
const INPROCESS_GROUP: usize = 32;

/// Decode + normalize + Parquet encode of `bodies` on `threads` threads for
/// `secs`, as the server does it: small requests checked per request and
/// built [`INPROCESS_GROUP`] at a time into one batch
/// (`ingest::Writer::append`), large ones built per request; spans/s.
fn in_process(bodies: &[Bytes], threads: usize, secs: f64) -> f64 {
    let spans = AtomicU64::new(0);
    let dir = tempfile::tempdir().expect("tempdir");
    let instances = Instances::load(dir.path(), false);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (spans, instances) = (&spans, &instances);
            scope.spawn(move || {
                let mut i = t;
                let mut batches: std::collections::BTreeMap<
                    Table,
                    Vec<arrow::record_batch::RecordBatch>,
                > = Default::default();
                let mut unbuilt: Vec<UnbuiltSpans> = Vec::new();
                let mut rows = 0;
                let build = |unbuilt: &mut Vec<UnbuiltSpans>| {
                    let built = spans::build_group(unbuilt, instances).expect("builds");
                    unbuilt.clear();
                    built
                };
                while Instant::now() < deadline {
                    let body = &bodies[i % bodies.len()];
                    i += threads;
                    let n = otlp::decode_for_ingest(
                        Signal::Traces,
                        Encoding::Protobuf,
                        body,
                        now_micros(),
                        instances,
                        usize::MAX,
                    )
                    .expect("decodes");
                    rows += keep(n.batches, &mut batches);
                    unbuilt.extend(n.unbuilt);
                    if unbuilt.len() >= INPROCESS_GROUP {
                        rows += keep(build(&mut unbuilt), &mut batches);
                    }
                    // Encode as the flush does, in chunks like a flush's.
                    if rows >= 65_536 {
                        for (table, b) in &batches {
                            encode_parquet(*table, b);
                        }
                        spans.fetch_add(rows as u64, Ordering::Relaxed);
                        batches.clear();
                        rows = 0;
                    }
                }
                if !unbuilt.is_empty() {
                    rows += keep(build(&mut unbuilt), &mut batches);
                }
                for (table, b) in &batches {
                    encode_parquet(*table, b);
                }
                spans.fetch_add(rows as u64, Ordering::Relaxed);
            });
        }
    });
    spans.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Keeps built batches for encoding; returns how many spans rows they hold.
/// Handler spans also yield invocation records: the server writes them
/// too, so the in-process rows do as well.
fn keep(
    built: Vec<TableBatch>,
    batches: &mut std::collections::BTreeMap<Table, Vec<arrow::record_batch::RecordBatch>>,
) -> usize {
    let mut rows = 0;
    for b in built {
        if b.table == Table::Spans {
            rows += b.batch.num_rows();
        }
        batches.entry(b.table).or_default().push(b.batch);
    }
    rows
}

/// The flush's sort of one flush worth of spans (204,800, like a 2 s flush
/// at 100k spans/s, concatenated as the flush does first):
/// `partition_by_hour` against arrow's generic `lexsort_to_indices` +
/// `take` over the same keys (hour, trace id, time), run alternately in one
/// thread; medians of `rounds`, in ms.
fn sort_phase(bodies: &[Bytes], rounds: usize) -> (f64, f64) {
    use arrow::array::{AsArray, Int64Array};
    use arrow::compute::{SortColumn, SortOptions, lexsort_to_indices, take_record_batch};
    use arrow::datatypes::TimestampMicrosecondType;

    let all = decoded_spans(bodies);
    let column = |name: &str| {
        all.column(all.schema().index_of(name).expect("column"))
            .clone()
    };
    let arrow_sort = || {
        let hours: Int64Array = column("time")
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .map(|t| t.map(|t| t.div_euclid(3_600_000_000)))
            .collect();
        let options = Some(SortOptions {
            descending: false,
            nulls_first: true,
        });
        let keys = [
            SortColumn {
                values: std::sync::Arc::new(hours),
                options,
            },
            SortColumn {
                values: column("trace_id"),
                options,
            },
            SortColumn {
                values: column("time"),
                options,
            },
        ];
        let indices = lexsort_to_indices(&keys, None).expect("lexsort");
        take_record_batch(&all, &indices).expect("take").num_rows()
    };
    let ours = || {
        partition_by_hour(Table::Spans, &all)
            .expect("partition")
            .iter()
            .map(|(_, b)| b.num_rows())
            .sum::<usize>()
    };
    let time = |f: &dyn Fn() -> usize| {
        let t = Instant::now();
        assert_eq!(f(), all.num_rows());
        t.elapsed().as_secs_f64() * 1e3
    };
    // Alternating which goes first: the first after a free may pay for
    // fresh pages.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            a.push(time(&arrow_sort));
            b.push(time(&ours));
        } else {
            b.push(time(&ours));
            a.push(time(&arrow_sort));
        }
    }
    (support::median(a), support::median(b))
}

/// The request threads' work and the flush's, in CPU time.
fn cpu_phases(big: &[Bytes], single: &[Bytes]) {
    let decode_512 = decode_phase(big, 204_800, 7);
    let decode_1 = decode_phase(single, 40_000, 7);
    println!(
        "\ndecode + normalize, CPU ms per 100,000 spans (one thread, median of 7): batches of 512 {decode_512:.1}, batches of 1 {decode_1:.1}"
    );
    let (wall, cpu) = encode_phase(big, 11);
    println!(
        "flush encode of 204,800 spans (sort, take, encode on every core; median of 11): {wall:.1} ms wall, {cpu:.1} ms CPU"
    );
    let (sort, take, arrow_take) = sort_take_phase(big, 7);
    println!(
        "  of which (median of 7): the sort {sort:.1} ms CPU (in shares on every core), the take of every row group on one thread {take:.1} ms CPU (arrow's take_record_batch: {arrow_take:.1})"
    );
    let (wall, cpu) = sorted_encode_phase(big, 11);
    println!(
        "  the same rows already in order (encode only, every core; median of 11): {wall:.1} ms wall, {cpu:.1} ms CPU"
    );
}

/// The flush's sort of 204,800 decoded spans (in shares on every core), and
/// its take of each row group's rows into that order (without encoding, on
/// this thread): medians of `rounds`, ms of CPU time, of the sort, of the
/// flush's take
/// (`take_rows`) and of arrow's `take_record_batch` for comparison.
fn sort_take_phase(bodies: &[Bytes], rounds: usize) -> (f64, f64, f64) {
    let all = decoded_spans(bodies);
    let cpu = || cpu_ms(ClockId::ThreadCPUTime);
    let group = writer_properties(Table::Spans)
        .max_row_group_row_count()
        .unwrap_or(usize::MAX);
    let parts = sort_by_hour(Table::Spans, &all).expect("sort");
    let take_all =
        |take: &dyn Fn(&arrow::array::UInt32Array) -> arrow::record_batch::RecordBatch| {
            let c = cpu();
            let mut rows = 0;
            for (_, order) in &parts {
                for start in (0..order.len()).step_by(group) {
                    let len = group.min(order.len() - start);
                    rows += take(&order.slice(start, len)).num_rows();
                }
            }
            assert_eq!(rows, all.num_rows());
            cpu() - c
        };
    let (mut sorts, mut takes, mut arrow_takes) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        // The sort runs in shares on every core: the whole process's CPU.
        let process = || cpu_ms(ClockId::ProcessCPUTime);
        let c = process();
        let again = sort_by_hour(Table::Spans, &all).expect("sort");
        sorts.push(process() - c);
        assert_eq!(again.len(), parts.len());
        takes.push(take_all(&|order| take_rows(&all, order).expect("take")));
        arrow_takes.push(take_all(&|order| {
            arrow::compute::take_record_batch(&all, order).expect("take")
        }));
    }
    (
        support::median(sorts),
        support::median(takes),
        support::median(arrow_takes),
    )
}

/// The flush's encoding alone, of rows taken into order beforehand: what
/// the flush would cost if the buffer kept its rows sorted as they came.
fn sorted_encode_phase(bodies: &[Bytes], rounds: usize) -> (f64, f64) {
    let all = decoded_spans(bodies);
    let hours: Vec<arrow::record_batch::RecordBatch> = partition_by_hour(Table::Spans, &all)
        .expect("partition")
        .into_iter()
        .map(|(_, batch)| batch)
        .collect();
    timed(rounds, || {
        hours
            .iter()
            .map(|batch| {
                let props = writer_properties(Table::Spans);
                let file = write_parquet(Vec::new(), Rows::Sorted(batch), props).expect("write");
                file.len()
            })
            .sum()
    })
}

/// Medians of `rounds` runs of `encode` (which returns the bytes it
/// encoded, never 0): wall time and the CPU time of the whole process, in
/// ms.
fn timed(rounds: usize, mut encode: impl FnMut() -> usize) -> (f64, f64) {
    let cpu = || cpu_ms(ClockId::ProcessCPUTime);
    let (mut wall, mut cpus) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (t, c) = (Instant::now(), cpu());
        assert!(encode() > 0);
        wall.push(t.elapsed().as_secs_f64() * 1e3);
        cpus.push(cpu() - c);
    }
    (support::median(wall), support::median(cpus))
}

/// The spans of `bodies`, decoded and concatenated as a flush does.
fn decoded_spans(bodies: &[Bytes]) -> arrow::record_batch::RecordBatch {
    let batches: Vec<_> = bodies
        .iter()
        .flat_map(|b| {
            otlp::decode(Signal::Traces, Encoding::Protobuf, b, 0)
                .expect("decodes")
                .batches
        })
        .filter(|b| b.table == Table::Spans)
        .map(|b| b.batch)
        .collect();
    arrow::compute::concat_batches(&Table::Spans.schema(), &batches).expect("concat")
}

/// CPU time of `clock` (the process's or this thread's), in ms.
fn cpu_ms(clock: ClockId) -> f64 {
    let t = clock_gettime(clock);
    t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 / 1e6
}

/// Decoding and normalizing `bodies` (the request threads' work) on one
/// thread: median of `rounds`, in ms of CPU time per 100,000 spans.
fn decode_phase(bodies: &[Bytes], spans: usize, rounds: usize) -> f64 {
    let cpu = || cpu_ms(ClockId::ThreadCPUTime);
    let times: Vec<f64> = (0..rounds)
        .map(|_| {
            let c = cpu();
            let mut rows = 0;
            for body in bodies {
                let n = otlp::decode(Signal::Traces, Encoding::Protobuf, body, 0).expect("decodes");
                rows += n.accepted;
            }
            assert_eq!(rows, spans as u64);
            (cpu() - c) * 100_000.0 / spans as f64
        })
        .collect();
    support::median(times)
}

/// The flush's work for 204,800 spans after the concatenation (sort each
/// hour's rows, take and encode its row groups on every core, as
/// `write_table` does, into memory): medians of `rounds` of the wall time
/// and of the CPU time of the whole process, in ms.
fn encode_phase(bodies: &[Bytes], rounds: usize) -> (f64, f64) {
    let all = decoded_spans(bodies);
    timed(rounds, || encode_hours(Table::Spans, &all))
}

/// Encodes as the flush does (`write_table` without the file): concatenate,
/// sort each hour's rows, take and encode its row groups, each on every
/// core.
fn encode_parquet(table: Table, batches: &[arrow::record_batch::RecordBatch]) -> usize {
    let all = concat_columns(&table.schema(), batches).expect("concat");
    encode_hours(table, &all)
}

/// The flush's work after the concatenation: sort each hour's rows, take
/// and encode its row groups on every core (`write_table` without the
/// file). Returns the bytes encoded.
fn encode_hours(table: Table, all: &arrow::record_batch::RecordBatch) -> usize {
    let mut total = 0;
    for (_, order) in sort_by_hour(table, all).expect("sort") {
        let rows = Rows::Taken {
            source: all,
            order: &order,
        };
        total += write_parquet(Vec::new(), rows, writer_properties(table))
            .expect("write")
            .len();
    }
    total
}

struct Server {
    child: Child,
    http: String,
    grpc: String,
    api: String,
    dir: tempfile::TempDir,
}

fn start_server(extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = support::Serve::start(&dir.path().join("data"), extra);
    Server {
        http: serve.addr("otlp_http"),
        grpc: serve.addr("otlp_grpc"),
        api: serve.addr("api"),
        child: serve.child,
        dir,
    }
}

impl Server {
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    fn stop(mut self) -> (u64, tempfile::TempDir) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        (dir_bytes(&self.dir.path().join("data/spans")), self.dir)
    }
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

#[derive(Debug, Default)]
struct LoadResult {
    spans_per_sec: f64,
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    refused: u64,
    /// CPU time of this process (the load generator) per acknowledged
    /// request, µs.
    client_cpu_us: f64,
    /// Requests acknowledged with 200.
    acknowledged: usize,
}

/// The load generator's clients. `raw` (the default) writes prebuilt
/// requests: HTTP/1.1 on keep-alive connections, answers read with
/// `httparse` ([`RawHttp`]), and gRPC calls on HTTP/2 connections through
/// `h2` ([`RawGrpc`]), so that the load on the shared two cores is little
/// more than the kernel's part. `FAASIGHT_BENCH_CLIENT=reqwest` selects the
/// general-purpose clients instead: reqwest for HTTP (what the Rust OTLP
/// exporter uses, ~3× the CPU per request) and tonic for gRPC.
fn load_client() -> String {
    let client = std::env::var("FAASIGHT_BENCH_CLIENT").unwrap_or_else(|_| "raw".into());
    assert!(
        client == "raw" || client == "reqwest",
        "FAASIGHT_BENCH_CLIENT is raw or reqwest, not {client:?}"
    );
    client
}

/// One HTTP/2 connection making prebuilt gRPC `Export` calls through the
/// `h2` crate (the HTTP/2 layer under tonic) without tonic's per-call
/// work: the gRPC counterpart of [`RawHttp`]. Clones share the
/// connection, one stream per call.
#[derive(Clone)]
struct RawGrpc {
    send: h2::client::SendRequest<Bytes>,
    uri: tonic::codegen::http::Uri,
}

impl RawGrpc {
    async fn connect(addr: &str) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(1 << 24)
            .handshake(tcp)
            .await
            .expect("h2 handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        RawGrpc {
            send,
            uri: format!(
                "http://{addr}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            )
            .parse()
            .expect("uri"),
        }
    }

    /// `body` as one uncompressed, length-prefixed gRPC message.
    fn message(body: &[u8]) -> Bytes {
        let mut m = Vec::with_capacity(5 + body.len());
        m.push(0);
        m.extend_from_slice(&u32::try_from(body.len()).expect("fits").to_be_bytes());
        m.extend_from_slice(body);
        Bytes::from(m)
    }

    /// Calls `Export` with a prebuilt message, reads the whole answer, and
    /// returns whether its `grpc-status` was 0 (OK).
    async fn export(&mut self, message: Bytes) -> Result<bool, h2::Error> {
        use tonic::codegen::http::{HeaderMap, Request};
        let status =
            |h: &HeaderMap| -> Option<u32> { h.get("grpc-status")?.to_str().ok()?.parse().ok() };
        let mut send = self.send.clone().ready().await?;
        let request = Request::post(self.uri.clone())
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let (response, mut stream) = send.send_request(request, false)?;
        stream.send_data(message, true)?;
        let response = response.await?;
        // A refusal may come as headers only, with the status in them.
        let in_headers = status(response.headers());
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let trailers = body.trailers().await?;
        Ok(trailers.as_ref().and_then(status).or(in_headers) == Some(0))
    }
}

/// One keep-alive HTTP/1.1 connection posting prebuilt requests.
struct RawHttp {
    addr: String,
    stream: Option<tokio::net::TcpStream>,
    buf: Vec<u8>,
}

impl RawHttp {
    fn new(addr: &str) -> Self {
        RawHttp {
            addr: addr.to_string(),
            stream: None,
            buf: Vec::with_capacity(4096),
        }
    }

    /// The request bytes of an OTLP/HTTP protobuf export of `body`.
    fn request(addr: &str, body: &[u8]) -> Bytes {
        let mut req = format!(
            "POST /v1/traces HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        Bytes::from(req)
    }

    /// Sends `request`, reads the whole answer and returns its status; on
    /// any error the connection is dropped and the next call reconnects.
    async fn post(&mut self, request: &[u8]) -> std::io::Result<u16> {
        let result = self.exchange(request).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<u16> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if self.stream.is_none() {
            let stream = tokio::net::TcpStream::connect(&self.addr).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
            self.buf.clear();
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(std::io::ErrorKind::NotConnected.into());
        };
        stream.write_all(request).await?;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut response = httparse::Response::new(&mut headers);
            let parsed = response
                .parse(&self.buf)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            if let httparse::Status::Complete(head) = parsed {
                let status = response.code.unwrap_or(0);
                let length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| {
                        std::str::from_utf8(h.value)
                            .ok()?
                            .trim()
                            .parse::<usize>()
                            .ok()
                    })
                    .ok_or_else(|| {
                        std::io::Error::new(std::io::ErrorKind::InvalidData, "no content-length")
                    })?;
                while self.buf.len() < head + length {
                    if stream.read_buf(&mut self.buf).await? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                self.buf.drain(..head + length);
                return Ok(status);
            }
            if stream.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// The server's CPU per acknowledged request since it had used
/// `cpu_before` seconds, in µs.
fn server_cpu_us(server: &Server, cpu_before: f64, r: &LoadResult) -> f64 {
    let used = process_cpu_secs(server.child.id()) - cpu_before;
    used * 1e6 / r.acknowledged.max(1) as f64
}

/// CPU seconds (user + system) the process `pid` has used.
fn process_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which ends at the last ')': utime and
    // stime are the 12th and 13th of them, in clock ticks (USER_HZ = 100).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

async fn load(
    protocol: &str,
    addr: &str,
    bodies: Arc<Vec<Bytes>>,
    spans_per_body: usize,
    concurrency: usize,
    secs: f64,
) -> LoadResult {
    let next = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let url = format!("http://{addr}/v1/traces");
    let raw_client = load_client() == "raw";
    let raw = protocol == "http" && raw_client;
    let raw_grpc = protocol == "grpc" && raw_client;
    let requests: Arc<Vec<Bytes>> = Arc::new(if raw {
        bodies.iter().map(|b| RawHttp::request(addr, b)).collect()
    } else if raw_grpc {
        bodies.iter().map(|b| RawGrpc::message(b)).collect()
    } else {
        Vec::new()
    });
    let mut grpc_connections = Vec::new();
    if raw_grpc {
        for _ in 0..concurrency.clamp(1, 8) {
            grpc_connections.push(RawGrpc::connect(addr).await);
        }
    }
    let channels: Vec<tonic::transport::Channel> = if protocol == "grpc" && !raw_grpc {
        let mut v = Vec::new();
        for _ in 0..concurrency.clamp(1, 8) {
            v.push(
                tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .expect("endpoint")
                    .connect()
                    .await
                    .expect("connect"),
            );
        }
        v
    } else {
        Vec::new()
    };
    let cpu_started = cpu_ms(ClockId::ProcessCPUTime);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let requests = Arc::clone(&requests);
        let mut raw_http = RawHttp::new(addr);
        let (bodies, next, refused, http, url) = (
            Arc::clone(&bodies),
            Arc::clone(&next),
            Arc::clone(&refused),
            http.clone(),
            url.clone(),
        );
        let channel = channels.get(t % channels.len().max(1)).cloned();
        let mut raw_grpc = grpc_connections
            .get(t % grpc_connections.len().max(1))
            .cloned();
        let protocol = protocol.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut grpc = channel.map(tonic::client::Grpc::new);
            let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            );
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed) % bodies.len();
                let t0 = Instant::now();
                let ok = if raw {
                    matches!(raw_http.post(&requests[i]).await, Ok(200))
                } else if let Some(g) = raw_grpc.as_mut() {
                    matches!(g.export(requests[i].clone()).await, Ok(true))
                } else if protocol == "http" {
                    let body = bodies[i].clone();
                    match http
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .body(body)
                        .send()
                        .await
                    {
                        Ok(r) => r.status().is_success(),
                        Err(_) => false,
                    }
                } else {
                    let g = grpc.as_mut().expect("channel");
                    if g.ready().await.is_err() {
                        false
                    } else {
                        g.unary::<Vec<u8>, Bytes, _>(
                            tonic::Request::new(bodies[i].to_vec()),
                            path.clone(),
                            RawCodec,
                        )
                        .await
                        .is_ok()
                    }
                };
                if ok {
                    lat.push(t0.elapsed().as_micros() as u32);
                } else {
                    refused.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let client_cpu_ms = cpu_ms(ClockId::ProcessCPUTime) - cpu_started;
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |v| *v as f64 / 1000.0)
    };
    LoadResult {
        spans_per_sec: (lat.len() * spans_per_body) as f64 / elapsed,
        requests_per_sec: lat.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        refused: refused.load(Ordering::Relaxed),
        client_cpu_us: client_cpu_ms * 1000.0 / lat.len().max(1) as f64,
        acknowledged: lat.len(),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo test --benches` lists benches; nothing to run then.
        return;
    }
    // Transparent huge pages off, as the server turns them off for itself
    // (src/main.rs), so the in-process figure and the server's are
    // measured under the same memory settings.
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
    let secs: f64 = std::env::var("FAASIGHT_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    // A wrong FAASIGHT_BENCH_CLIENT stops the bench before any server starts.
    load_client();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let big = Arc::new(payloads(204_800, 512, 1));
    let single = Arc::new(payloads(40_000, 1, 2));
    let bytes_per_span = big.iter().map(|b| b.len()).sum::<usize>() as f64 / 204_800.0;
    println!(
        "machine: {cores} cores; payload: {bytes_per_span:.0} protobuf bytes per span (batch 512)"
    );

    // FAASIGHT_BENCH_DISK_ONLY=1: only the bytes-on-disk measurement;
    // FAASIGHT_BENCH_KEEP=DIR keeps its data directory there for inspection.
    let disk_only = std::env::var_os("FAASIGHT_BENCH_DISK_ONLY").is_some();
    // FAASIGHT_BENCH_INPROCESS_ONLY=1: only the in-process rows (for
    // profiling and A/B runs of the decode + encode path).
    if std::env::var_os("FAASIGHT_BENCH_INPROCESS_ONLY").is_some() {
        cpu_phases(&big, &single);
        let inproc_512 = in_process(&big, cores, secs);
        let inproc_1 = in_process(&single, cores, secs);
        println!("in-process spans/s: batches of 512 {inproc_512:.0}, batches of 1 {inproc_1:.0}");
        return;
    }
    // FAASIGHT_BENCH_ONLY=http/512/4 (protocol/batch/concurrency): only
    // that load row, against a fresh server, for profiling the server.
    if let Ok(only) = std::env::var("FAASIGHT_BENCH_ONLY") {
        let parts: Vec<&str> = only.split('/').collect();
        let [protocol, batch, c] = parts[..] else {
            panic!("FAASIGHT_BENCH_ONLY is protocol/batch/concurrency");
        };
        let batch: usize = batch.parse().expect("batch");
        let bodies = if batch == 1 { &single } else { &big };
        let server = start_server(&["--flush-interval", "2s"]);
        println!("server pid {}", server.child.id());
        let addr = if protocol == "http" {
            server.http.clone()
        } else {
            server.grpc.clone()
        };
        let c = c.parse().expect("concurrency");
        let server_cpu = process_cpu_secs(server.child.id());
        let r = rt.block_on(load(protocol, &addr, Arc::clone(bodies), batch, c, secs));
        let server_cpu_us = server_cpu_us(&server, server_cpu, &r);
        let rss = server.peak_rss_mib();
        let metrics = rt.block_on(async {
            let url = format!("http://{}/metrics", server.api);
            match reqwest::get(url).await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(e) => e.to_string(),
            }
        });
        for line in metrics.lines().filter(|l| {
            [
                "faasight_flush_seconds_sum",
                "faasight_flush_seconds_count",
                "faasight_ingest_overloaded",
                "faasight_ingest_requests_refused",
                "faasight_wal_fsync_seconds_count",
                "faasight_wal_fsync_seconds_sum",
                "faasight_wal_group_commit",
            ]
            .iter()
            .any(|m| l.starts_with(m))
        }) {
            println!("{line}");
        }
        let _ = server.stop();
        println!(
            "{only} ({} client): {:.0} spans/s, {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, refused {}, peak RSS {rss:.0} MiB, CPU per request: server {server_cpu_us:.1} µs, load generator {:.1} µs",
            match (protocol, load_client().as_str()) {
                ("grpc", "raw") => "raw h2",
                ("grpc", _) => "tonic",
                (_, "raw") => "raw",
                _ => "reqwest",
            },
            r.spans_per_sec,
            r.requests_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.refused,
            r.client_cpu_us
        );
        return;
    }
    if !disk_only {
        load_phases(&rt, &big, &single, cores, secs);
    }
    disk(&rt, &big, bytes_per_span);
}

fn load_phases(
    rt: &tokio::runtime::Runtime,
    big: &Arc<Vec<Bytes>>,
    single: &Arc<Vec<Bytes>>,
    cores: usize,
    secs: f64,
) {
    let (arrow_ms, ours_ms) = sort_phase(big, 11);
    println!(
        "\nflush sort of {} spans (median of 11, one thread): arrow lexsort_to_indices + take {arrow_ms:.1} ms, partition_by_hour {ours_ms:.1} ms",
        big.len() * 512
    );
    cpu_phases(big, single);
    let inproc_512 = in_process(big, cores, secs);
    let inproc_1 = in_process(single, cores, secs);
    println!("\n| in-process decode + normalize + Parquet encode | spans/s |\n|---|---|");
    println!(
        "| batches of 512, {cores} threads | {inproc_512:.0} |\n| batches of 1 (built {INPROCESS_GROUP} at a time), {cores} threads | {inproc_1:.0} |"
    );

    println!(
        "\nload generator's clients: {} (FAASIGHT_BENCH_CLIENT: raw = RawHttp and RawGrpc, reqwest = reqwest and tonic); CPU µs per acknowledged request, server and load generator\n\n| protocol | batch | concurrency | spans/s | requests/s | p50 ms | p99 ms | refused | peak RSS MiB | vs in-process | server CPU µs/req | load CPU µs/req |",
        load_client()
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    // FAASIGHT_BENCH_PROTOCOLS=http (or grpc): only that protocol's rows,
    // for quicker A/B runs.
    let protocols =
        std::env::var("FAASIGHT_BENCH_PROTOCOLS").unwrap_or_else(|_| "http,grpc".into());
    for protocol in ["http", "grpc"] {
        if !protocols.split(',').any(|p| p.trim() == protocol) {
            continue;
        }
        for (batch, bodies, inproc) in [(512usize, big, inproc_512), (1, single, inproc_1)] {
            let levels: &[usize] = if batch == 512 {
                &[1, 4, 16, 64]
            } else {
                &[4, 16, 64, 256]
            };
            for &c in levels {
                let server = start_server(&["--flush-interval", "2s"]);
                let addr = if protocol == "http" {
                    server.http.clone()
                } else {
                    server.grpc.clone()
                };
                let server_cpu = process_cpu_secs(server.child.id());
                let r = rt.block_on(load(protocol, &addr, Arc::clone(bodies), batch, c, secs));
                let server_cpu_us = server_cpu_us(&server, server_cpu, &r);
                let rss = server.peak_rss_mib();
                let _ = server.stop();
                println!(
                    "| {protocol} | {batch} | {c} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {rss:.0} | {:.0}% | {server_cpu_us:.1} | {:.1} |",
                    r.spans_per_sec,
                    r.requests_per_sec,
                    r.p50_ms,
                    r.p99_ms,
                    r.refused,
                    100.0 * r.spans_per_sec / inproc,
                    r.client_cpu_us
                );
            }
        }
    }

    // Overload: far more than the server can take, with a small buffer.
    let server = start_server(&["--flush-interval", "2s", "--max-buffer-size", "64MiB"]);
    let r = rt.block_on(load(
        "http",
        &server.http.clone(),
        Arc::clone(big),
        512,
        256,
        secs,
    ));
    let rss = server.peak_rss_mib();
    let _ = server.stop();
    println!(
        "\noverload (http, batch 512, 256 concurrent, 64 MiB buffer): {:.0} spans/s, refused {}, p99 {:.1} ms, peak RSS {rss:.0} MiB",
        r.spans_per_sec, r.refused, r.p99_ms
    );
}

/// Every unique span once, then a clean stop (flush): bytes on disk per span.
fn disk(rt: &tokio::runtime::Runtime, big: &Arc<Vec<Bytes>>, bytes_per_span: f64) {
    let server = start_server(&["--flush-interval", "1h"]);
    let r = rt.block_on(async {
        let client = reqwest::Client::new();
        let mut ok = 0;
        for b in big.iter() {
            let resp = client
                .post(format!("http://{}/v1/traces", server.http))
                .header("content-type", "application/x-protobuf")
                .body(b.clone())
                .send()
                .await;
            ok += usize::from(resp.is_ok_and(|r| r.status().is_success()));
        }
        ok
    });
    let (bytes, dir) = server.stop();
    let records = dir_bytes(&dir.path().join("data/invocation_records"));
    println!(
        "disk: {} spans in {bytes} bytes of spans Parquet = {:.1} bytes per span (protobuf: {bytes_per_span:.0}); plus {records} bytes of invocation_records ({:.1} per span)",
        r * 512,
        bytes as f64 / (r * 512) as f64,
        records as f64 / (r * 512) as f64
    );
    if let Some(keep) = std::env::var_os("FAASIGHT_BENCH_KEEP") {
        let keep = Path::new(&keep);
        let _ = std::fs::remove_dir_all(keep);
        std::fs::rename(dir.path().join("data"), keep).expect("keep the data directory");
        println!("data directory kept in {}", keep.display());
    }
}
