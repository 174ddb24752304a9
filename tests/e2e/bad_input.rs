//! Hostile and malformed input over HTTP and gRPC: each gets the right
//! status, the server keeps serving, and nothing stored is lost.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use crate::support::{TestServer, client_script, python, run_json};

pub(crate) fn span(trace_id: Vec<u8>, name: &str, attr: &str) -> Span {
    Span {
        trace_id,
        span_id: vec![7; 8],
        name: name.into(),
        kind: 2,
        start_time_unix_nano: 1_764_331_200_000_000_000,
        end_time_unix_nano: 1_764_331_200_100_000_000,
        attributes: vec![KeyValue {
            key: "payload".into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(attr.into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub(crate) fn request(spans: Vec<Span>) -> Vec<u8> {
    request_under("service.name", "hostile".into(), spans)
}

/// A traces request of `spans` under one resource with one attribute.
fn request_under(key: &str, value: String, spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: key.into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue(value)),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// A traces request of `spans` minimal spans under one resource whose
/// single attribute is `resource_bytes` long.
fn repeating_request(resource_bytes: usize, spans: usize) -> Vec<u8> {
    let spans = (0..spans)
        .map(|i| Span {
            trace_id: (i as u128 + 1).to_be_bytes().to_vec(),
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: "s".into(),
            ..Default::default()
        })
        .collect();
    request_under("padding", "r".repeat(resource_bytes), spans)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

struct Post<'a> {
    server: &'a TestServer,
}

impl Post<'_> {
    fn send(
        &self,
        content_type: &str,
        encoding: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, Vec<u8>, Option<String>) {
        let mut req = reqwest::blocking::Client::new()
            .post(format!("{}/v1/traces", self.server.http_url()))
            .header("content-type", content_type)
            .body(body);
        if let Some(e) = encoding {
            req = req.header("content-encoding", e);
        }
        let resp = req.send().expect("send");
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        (status, resp.bytes().expect("body").to_vec(), retry)
    }
}

/// `google.rpc.Status`, the error body of OTLP/HTTP (message only).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatusBody {
    #[prost(string, tag = "2")]
    message: String,
}

/// Asserts that `resp` has `status` and a JSON body whose `field` (each
/// endpoint names its message differently) contains `needle`.
fn assert_json_refusal(resp: reqwest::blocking::Response, status: u16, field: &str, needle: &str) {
    assert_eq!(resp.status().as_u16(), status);
    let refusal: serde_json::Value = resp.json().expect("json error");
    assert!(
        refusal[field].as_str().unwrap_or_default().contains(needle),
        "{refusal}"
    );
}

const PB: &str = "application/x-protobuf";
const JSON: &str = "application/json";

#[test]
fn http_bad_input_matrix() {
    let server = TestServer::builder()
        .arg("--max-body-size")
        .arg("4MiB")
        .start();
    let post = Post { server: &server };
    // A good request first: it must survive everything below.
    let (status, body, _) = post.send(PB, None, request(vec![span(vec![1; 16], "good", "x")]));
    assert_eq!(status, 200);
    assert!(
        ExportTraceServiceResponse::decode(body.as_slice())
            .expect("response")
            .partial_success
            .is_none()
    );

    // Invalid ids: partial success, the valid span is stored.
    let (status, body, _) = post.send(
        PB,
        None,
        request(vec![
            span(vec![2; 16], "valid", "x"),
            span(vec![3; 15], "short-id", "x"),
            span(vec![0; 16], "zero-id", "x"),
        ]),
    );
    assert_eq!(status, 200);
    let resp = ExportTraceServiceResponse::decode(body.as_slice()).expect("response");
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial.error_message.contains("16 bytes"),
        "{}",
        partial.error_message
    );
    // The same in JSON: the response is JSON too.
    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A","spanId":"0B0B0B0B0B0B0B0B","name":"json-ok"},{"traceId":"0a0a","spanId":"0b0b0b0b0b0b0b0b","name":"json-bad"}]}]}]}"#;
    let (status, body, _) = post.send(JSON, None, json.as_bytes().to_vec());
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json response");
    // OTLP/JSON writes an int64 as a string.
    assert_eq!(v["partialSuccess"]["rejectedSpans"], "1", "{v}");
    // A full success in JSON leaves partialSuccess out: `{}`.
    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c","spanId":"0d0d0d0d0d0d0d0d","name":"json-whole"}]}]}]}"#;
    let (status, body, _) = post.send(JSON, None, json.as_bytes().to_vec());
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json response");
    assert_eq!(v, serde_json::json!({}));

    // (what, content type, content encoding, body, expected status)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        (
            "garbage protobuf",
            PB,
            None,
            vec![0xff, 0xff, 0xff, 0x0f, 0x00, 0x01],
            400,
        ),
        (
            "truncated JSON",
            JSON,
            None,
            br#"{"resourceSpans":[{"scopeSpans":[{"#.to_vec(),
            400,
        ),
        (
            "wrong content type",
            "text/plain",
            None,
            b"hello".to_vec(),
            415,
        ),
        ("no content type", "", None, b"hello".to_vec(), 415),
        (
            "bad gzip stream",
            PB,
            Some("gzip"),
            b"\x1f\x8b\x08\x00garbage".to_vec(),
            400,
        ),
        ("unsupported encoding", PB, Some("br"), b"x".to_vec(), 415),
        ("oversized body", PB, None, vec![0u8; 5 << 20], 413),
        (
            "oversized after gzip",
            PB,
            Some("gzip"),
            gzip(&request(vec![span(
                vec![4; 16],
                "big",
                &"y".repeat(5 << 20),
            )])),
            413,
        ),
        (
            "deeply nested AnyValue",
            PB,
            None,
            crate_deep_request(10_000),
            400,
        ),
    ];
    for (what, ct, enc, body, expected) in cases {
        let (status, _, _) = post.send(ct, enc, body);
        assert_eq!(status, expected, "{what}");
    }

    // A body far past the limit, declared or streamed (chunked, no
    // length): the client still reads a 413 in its own encoding, not a
    // reset connection while it is writing.
    let (status, body, _) = post.send(PB, None, vec![0u8; 24 << 20]);
    assert_eq!(status, 413);
    let refusal = RpcStatusBody::decode(body.as_slice()).expect("google.rpc.Status");
    assert!(
        refusal.message.contains("--max-body-size"),
        "{}",
        refusal.message
    );
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/v1/traces", server.http_url()))
        .header("content-type", JSON)
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(vec![
            b' ';
            24 << 20
        ])))
        .send()
        .expect("chunked send");
    assert_json_refusal(resp, 413, "message", "--max-body-size");

    // The JSON ingest endpoints refuse an oversized body the same way, in
    // their own error shape.
    for (path, field) in [
        ("/v1/invocations", "error"),
        ("/v1/lambda/telemetry?function_name=f", "error"),
        ("/v1/firehose", "errorMessage"),
    ] {
        let resp = reqwest::blocking::Client::new()
            .post(format!("{}{path}", server.http_url()))
            .header("content-type", JSON)
            .header("x-amz-firehose-request-id", "big-1")
            .body(vec![b' '; 24 << 20])
            .send()
            .expect("send");
        assert_eq!(resp.status().as_u16(), 413, "{path}");
        let refusal: serde_json::Value = resp.json().expect("json error");
        assert!(
            refusal[field]
                .as_str()
                .unwrap_or_default()
                .contains("--max-body-size"),
            "{path}: {refusal}"
        );
    }

    // A 300 MiB gzip bomb is refused without inflating it: the server's
    // peak memory grows far less than the inflated body would need.
    let before = server.peak_rss_mib();
    let bomb = gzip(&vec![0u8; 300 << 20]);
    assert!(bomb.len() < 1 << 20);
    let (status, _, _) = post.send(PB, Some("gzip"), bomb);
    assert_eq!(status, 413);
    let after = server.peak_rss_mib();
    assert!(
        before > 0.0 && after - before < 100.0,
        "peak RSS {before} MiB before the bomb, {after} MiB after"
    );

    // A small body whose rows would repeat one large resource on every
    // span (~300 KB: 2,000 spans under a 200 KB resource; it used to take
    // the server from ~75 to ~880 MiB) is refused whole, before any row is
    // built.
    let before = server.peak_rss_mib();
    let repeating = repeating_request(200_000, 2_000);
    assert!(repeating.len() < 400_000);
    let (status, body, _) = post.send(PB, None, repeating);
    assert_eq!(status, 413);
    let refusal = RpcStatusBody::decode(body.as_slice()).expect("google.rpc.Status");
    assert!(
        refusal.message.contains("fewer items per resource"),
        "{}",
        refusal.message
    );
    let after = server.peak_rss_mib();
    assert!(
        after - before < 100.0,
        "peak RSS {before} MiB before, {after} MiB after"
    );

    // A Firehose delivery of small gzip'd records that each inflate to
    // 1 MiB: within the limit one by one, 40 MiB together, over the
    // 16 MiB (four times the 4 MiB body limit) a delivery may inflate to.
    let record = |i: usize| {
        let sub = serde_json::json!({"messageType": "DATA_MESSAGE", "owner": "1",
            "logGroup": "/aws/lambda/bomb", "logStream": "s", "subscriptionFilters": [],
            "logEvents": [{"id": i.to_string(), "timestamp": 1_764_331_200_000i64,
                           "message": "x".repeat(1 << 20)}]});
        let data = gzip(sub.to_string().as_bytes());
        serde_json::json!({ "data": base64::engine::general_purpose::STANDARD.encode(data) })
    };
    let delivery = serde_json::json!({"requestId": "bombs-1", "timestamp": 1,
        "records": (0..40).map(record).collect::<Vec<_>>()});
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/v1/firehose", server.http_url()))
        .header("content-type", JSON)
        .body(delivery.to_string())
        .send()
        .expect("send");
    assert_json_refusal(
        resp,
        413,
        "errorMessage",
        "inflate to more than 16777216 bytes",
    );
    // Telemetry API events each holding a 1 KB query's parameters: 20,000
    // of them (1.2 MB) would repeat 40 MB.
    let event = r#"{"time":"2026-01-01T00:00:00Z","type":"function","record":"x"}"#;
    let query = format!(
        "function_name={}&function_version={}&region={}&account_id={}",
        "f".repeat(250),
        "v".repeat(250),
        "r".repeat(250),
        "a".repeat(250)
    );
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/v1/lambda/telemetry?{query}", server.http_url()))
        .header("content-type", JSON)
        .body(format!("[{}]", vec![event; 20_000].join(",")))
        .send()
        .expect("send");
    assert_json_refusal(resp, 413, "error", "query parameters");
    assert_eq!(server.count("SELECT count(*) AS n FROM logs"), 0);

    // A huge (but allowed) attribute value is stored whole.
    let huge = "z".repeat(3 << 20);
    let (status, _, _) = post.send(
        PB,
        Some("gzip"),
        gzip(&request(vec![span(vec![5; 16], "huge", &huge)])),
    );
    assert_eq!(status, 200);
    let n =
        server.count("SELECT length(attributes['payload']) AS n FROM spans WHERE name = 'huge'");
    assert_eq!(n, 3 << 20);

    // Still serving, nothing lost or half-stored.
    let rows = server.sql("SELECT name FROM spans ORDER BY name");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(
        names,
        vec!["good", "huge", "json-ok", "json-whole", "valid"]
    );
    let (status, _) = server.get("/healthz");
    assert_eq!(status, 200);
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("faasight_ingest_items_rejected_total{signal=\"traces\"} 3"),
        "{metrics}"
    );
}

/// The same hostile bytes the decoder unit test builds: arrays nested
/// `depth` deep inside one attribute.
fn crate_deep_request(depth: usize) -> Vec<u8> {
    fn field(tag: u32, inner: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(inner.len() as u64, &mut out);
        out.extend_from_slice(inner);
        out
    }
    let mut any = vec![0x18, 0x01];
    for _ in 0..depth {
        any = field(5, &field(1, &any));
    }
    let mut kv = field(1, b"deep");
    kv.extend(field(2, &any));
    let mut s = span(vec![6; 16], "deep", "x").encode_to_vec();
    s.extend(field(9, &kv));
    field(1, &field(2, &field(2, &s)))
}

#[test]
fn grpc_bad_input_is_refused_and_server_keeps_serving() {
    let server = TestServer::builder()
        .arg("--max-body-size")
        .arg("4MiB")
        .start();
    let out = run_json(
        Command::new(python())
            .arg(client_script("grpc_raw.py"))
            .arg(&server.grpc),
    );
    assert_eq!(out["garbage"], "INVALID_ARGUMENT", "{out}");
    assert_eq!(out["deep"], "INVALID_ARGUMENT", "{out}");
    // tonic's size cap: OUT_OF_RANGE for a large frame, RESOURCE_EXHAUSTED
    // when decompression reaches the cap (it inflates into a bounded buffer).
    assert_eq!(out["oversized"], "OUT_OF_RANGE", "{out}");
    assert_eq!(out["gzip_bomb"], "RESOURCE_EXHAUSTED", "{out}");
    // Rows that would repeat a 200 KB resource on each of 2,000 spans.
    assert_eq!(out["repeating"], "INVALID_ARGUMENT", "{out}");
    // An empty request is a valid (empty) export.
    assert_eq!(out["empty"], "OK", "{out}");
    let (status, _) = server.get("/healthz");
    assert_eq!(status, 200);
    assert_eq!(server.count("SELECT count(*) AS n FROM spans"), 0);
}

#[test]
fn back_pressure_answers_503_with_retry_after_and_grpc_unavailable() {
    // The flush cannot write while `spans` is a file where its directory
    // should be, so the tiny buffer stays full: a deterministic overload.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::write(data.join("spans"), b"in the way").expect("blocker");
    let server = TestServer::builder()
        .data_dir(&data)
        .args(&["--max-buffer-size", "1KiB", "--flush-interval", "200ms"])
        .start();
    let post = Post { server: &server };
    let (status, _, _) = post.send(
        PB,
        None,
        request(vec![span(vec![1; 16], "first", &"p".repeat(4096))]),
    );
    assert_eq!(status, 200);
    let (status, _, retry) = post.send(PB, None, request(vec![span(vec![2; 16], "second", "x")]));
    assert_eq!(status, 503);
    assert_eq!(retry.as_deref(), Some("1"));
    let out = run_json(
        Command::new(python())
            .arg(client_script("grpc_raw.py"))
            .arg(&server.grpc)
            .arg("valid-only"),
    );
    assert_eq!(out["valid"], "UNAVAILABLE", "{out}");
    assert!(server.wait_for_log("flush failed").contains("flush failed"));
    // Once the disk problem is gone the retried flush writes the row, and
    // ingest is accepted again.
    std::fs::remove_file(data.join("spans")).expect("unblock");
    let deadline = Instant::now() + Duration::from_secs(10);
    let flushed = || {
        server
            .get("/metrics")
            .1
            .contains("faasight_flushed_rows_total 1\n")
    };
    while !flushed() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(flushed(), "the flush was not retried");
    assert!(data.join("spans").is_dir());
    let (status, _, _) = post.send(PB, None, request(vec![span(vec![3; 16], "third", "x")]));
    assert_eq!(status, 200);
    let rows = server.sql("SELECT name FROM spans ORDER BY name");
    assert_eq!(
        rows,
        vec![
            serde_json::json!({"name": "first"}),
            serde_json::json!({"name": "third"})
        ]
    );
}

/// A client that sends half its request headers and stops is disconnected
/// (after 10 s) on both HTTP ports, and the server goes on serving. Before,
/// such a connection stayed open for good: a few hundred of them would use
/// up the server's file descriptors.
#[test]
fn a_client_stalled_in_its_headers_is_disconnected() {
    use std::io::{Read, Write};
    let server = TestServer::start();
    let stalled: Vec<std::net::TcpStream> = [&server.http, &server.api]
        .iter()
        .map(|addr| {
            let mut s = std::net::TcpStream::connect(addr.as_str()).expect("connect");
            s.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: faasight\r\n")
                .expect("half the headers");
            s
        })
        .collect();
    for (mut s, port) in stalled.into_iter().zip(["otlp http", "api"]) {
        // Longer than the server's limit: a read that times out means the
        // server kept the connection.
        s.set_read_timeout(Some(std::time::Duration::from_secs(40)))
            .expect("timeout");
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("{port}: the server kept a stalled connection open: {e}"),
        }
    }
    let (status, _) = server.get("/healthz");
    assert_eq!(status, 200);
}

/// More connections than the process has file descriptors for: those past
/// its connection budget are closed at once, and the flush still writes
/// what was acknowledged. Before, the server accepted connections until
/// it ran out of descriptors: the flush failed with "Too many open files"
/// for as long as they stayed open (rows kept in the WAL and the buffer),
/// and the accept loops logged a warning every 100 ms.
#[test]
fn more_connections_than_open_files_leave_the_flush_working() {
    // 400 files: a budget of 300 connections, 100 for the rest.
    let server = TestServer::builder()
        .open_files(400)
        .args(&["--flush-interval", "5s"])
        .start();
    let log = server.wait_for_log("connection budget");
    assert!(log.contains("connections=300"), "{log}");
    let post = Post { server: &server };
    let spans = (1..=5u8).map(|i| span(vec![i; 16], "kept", "x")).collect();
    let (status, _, _) = post.send(PB, None, request(spans));
    assert_eq!(status, 200);

    // 450 idle connections, before the first flush: 300 are kept, the
    // others closed by the server; the kernel's backlog takes them all.
    let flood: Vec<std::net::TcpStream> = (0..450)
        .map(|_| std::net::TcpStream::connect(server.http.as_str()).expect("connect"))
        .collect();
    let spans_dir = server.data_dir.join("spans");
    crate::support::wait_until("the spans flushed to Parquet", || {
        walkdir_has_parquet(&spans_dir)
    });
    let log = server.wait_for_log("connection limit reached");
    assert!(!log.contains("Too many open files"), "{log}");

    drop(flood);
    // Until the server has seen them closed, new connections are refused.
    crate::support::wait_until("the server to serve again", || {
        reqwest::blocking::Client::new()
            .post(format!("http://{}/api/v1/query", server.api))
            .json(&serde_json::json!({ "sql": "SELECT 1", "format": "json" }))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    assert_eq!(server.count("SELECT count(*) AS n FROM spans"), 5);
    let refused = server
        .metric("faasight_connections_refused_total")
        .expect("refused");
    assert!(refused >= 150.0, "refused {refused}");
    assert_eq!(server.metric("faasight_connections_limit"), Some(300.0));
    assert!(
        server
            .metric("faasight_connections_open")
            .is_some_and(|n| n >= 1.0)
    );
}

/// Whether a Parquet file is anywhere under `dir`.
fn walkdir_has_parquet(dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        if path.is_dir() {
            walkdir_has_parquet(&path)
        } else {
            path.extension().is_some_and(|x| x == "parquet")
        }
    })
}
