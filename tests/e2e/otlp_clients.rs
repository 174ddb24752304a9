//! Real OpenTelemetry exporters (Python HTTP/gRPC, JS HTTP JSON, Rust gRPC)
//! send to the real binary; SQL must give back exactly what they sent.

use std::process::Command;

use serde_json::Value;

use crate::support::{TestServer, client_script, python, repo_root, run_json};

fn python_client(server: &TestServer, protocol: &str, service: &str, traces: usize) -> Value {
    let endpoint = if protocol == "http" {
        server.http_url()
    } else {
        server.grpc_url()
    };
    run_json(
        Command::new(python())
            .arg(client_script("send_otlp.py"))
            .args([
                "--protocol",
                protocol,
                "--endpoint",
                &endpoint,
                "--service",
                service,
            ])
            .args(["--traces", &traces.to_string()]),
    )
}

/// Every created span is stored once with its ids, parent, name and
/// duration: `end_time - time` of the microsecond timestamps, whatever
/// nanoseconds the SDK measured.
fn assert_spans_stored(server: &TestServer, service: &str, created: &[Value]) {
    let rows = server.sql(&format!(
        "SELECT trace_id, span_id, parent_span_id, name, duration_ms FROM spans WHERE service_name = '{service}' ORDER BY span_id"
    ));
    let mut expected: Vec<&Value> = created.iter().collect();
    expected.sort_by_key(|v| v["span_id"].as_str().unwrap_or_default().to_string());
    assert_eq!(rows.len(), expected.len(), "span count of {service}");
    for (row, exp) in rows.iter().zip(expected) {
        for k in ["trace_id", "span_id", "parent_span_id", "name"] {
            assert_eq!(row[k], exp[k], "{k} of {service}: {row} vs {exp}");
        }
        // Nanoseconds as a JSON number (Python) or a decimal string (JS).
        let micros = |k: &str| {
            let ns = exp[k].as_u64().or_else(|| exp[k].as_str()?.parse().ok());
            ns.expect("SDK timestamp") / 1_000
        };
        let expected_ms = (micros("end_ns") - micros("start_ns")) as f64 / 1_000.0;
        assert_eq!(
            row["duration_ms"].as_f64(),
            Some(expected_ms),
            "{row} vs {exp}"
        );
    }
}

fn assert_handler_columns(server: &TestServer, service: &str, traces: i64) {
    let rows = server.sql(&format!(
        "SELECT function_name, request_id, cold_start, kind, attributes['http.route'] AS route, \
         resource_attributes['cloud.region'] AS region, duration_ms >= 0 AS has_duration \
         FROM spans WHERE service_name = '{service}' AND name = 'handler' ORDER BY request_id"
    ));
    assert_eq!(rows.len() as i64, traces);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["function_name"], format!("{service}-fn"));
        assert_eq!(r["request_id"], format!("{service}-req-{i}"));
        assert_eq!(r["cold_start"], Value::Bool(i == 0));
        assert_eq!(r["kind"], "server");
        assert_eq!(r["route"], "/orders/{id}");
        assert_eq!(r["has_duration"], Value::Bool(true));
    }
}

/// The README's quick start, as written: its `export` line's variables
/// (the port swapped for this server's) and `opentelemetry-instrument`
/// from the distro send a plain script's spans, and the README's query
/// counts them. Without `OTEL_EXPORTER_OTLP_PROTOCOL` the Python SDK
/// speaks gRPC to the HTTP port and nothing arrives.
#[test]
fn the_readme_quick_start_sends_spans_with_opentelemetry_instrument() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README");
    let export = readme
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("export OTEL_EXPORTER_OTLP_ENDPOINT="))
        .expect("the quick start's export line");
    let query = readme
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("curl -s localhost:8080/api/v1/query -d '")
        })
        .and_then(|l| l.strip_suffix('\''))
        .expect("the quick start's query");
    let server = TestServer::start();
    let bin = python().parent().expect("venv bin").to_path_buf();
    let mut cmd = Command::new(bin.join("opentelemetry-instrument"));
    // Only the README's variables: none of this shell's own.
    crate::support::env_remove_prefixed(&mut cmd, "OTEL_");
    for assignment in export.trim_start_matches("export ").split_whitespace() {
        let (name, value) = assignment.split_once('=').expect("NAME=value");
        cmd.env(
            name,
            value.replace("http://127.0.0.1:4318", &server.http_url()),
        );
    }
    let out = crate::support::run_ok(
        cmd.arg(python())
            .arg(client_script("quick_start_handler.py")),
    );
    let sql: Value = serde_json::from_str(query).expect("the query is JSON");
    let rows = server.sql(sql["sql"].as_str().expect("sql"));
    let count = |name: &str| {
        rows.iter()
            .find(|r| r["name"] == name)
            .map(|r| r["n"].clone())
    };
    assert_eq!(
        (count("handler"), count("db")),
        (Some(3.into()), Some(3.into())),
        "{rows:?}; the client said: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let services = server.sql("SELECT DISTINCT service_name FROM spans");
    assert_eq!(services, [serde_json::json!({"service_name": "checkout"})]);
}

#[test]
fn python_sdk_over_http_and_grpc_with_gzip() {
    let server = TestServer::start();
    for (protocol, service) in [("http", "py-http"), ("grpc", "py-grpc")] {
        let created = python_client(&server, protocol, service, 3);
        let spans = created["spans"].as_array().expect("spans");
        assert_eq!(spans.len(), 6);
        // Visible within a second of the acknowledgement: no flush needed.
        assert_spans_stored(&server, service, spans);
        assert_handler_columns(&server, service, 3);
        let rows = server.sql(&format!(
            "SELECT region FROM (SELECT resource_attributes['cloud.region'] AS region FROM spans WHERE service_name = '{service}') GROUP BY region"
        ));
        assert_eq!(rows, vec![serde_json::json!({"region": "eu-west-1"})]);
        // Events are kept.
        let n = server.count(&format!(
            "SELECT count(*) AS n FROM spans WHERE service_name = '{service}' AND events LIKE '%\"retry\"%'"
        ));
        assert_eq!(n, 3);
        // Logs carry the trace context of the span they were written in.
        let logs = created["logs"].as_array().expect("logs");
        for l in logs {
            let rows = server.sql(&format!(
                "SELECT trace_id, span_id, body, severity_text FROM logs WHERE service_name = '{service}' AND body = '{}'",
                l["body"].as_str().expect("body")
            ));
            assert_eq!(rows.len(), 1, "log {l}");
            assert_eq!(rows[0]["trace_id"], l["trace_id"]);
            assert_eq!(rows[0]["span_id"], l["span_id"]);
            assert_eq!(rows[0]["severity_text"], "WARN");
        }
        // Metrics: the counter as a sum, the histogram with its buckets.
        let rows = server.sql(&format!(
            "SELECT name, kind, value, count, sum, array_length(bucket_counts) = array_length(bounds) + 1 AS shaped \
             FROM metrics WHERE service_name = '{service}' ORDER BY name"
        ));
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0]["name"], "faas.invocations");
        assert_eq!(rows[0]["kind"], "sum");
        assert_eq!(rows[0]["value"], 3.0);
        assert_eq!(rows[1]["name"], "faas.invoke_duration");
        assert_eq!(rows[1]["kind"], "histogram");
        assert_eq!(rows[1]["count"], 3);
        assert_eq!(rows[1]["sum"], 60.0);
        assert_eq!(rows[1]["shaped"], true);
    }
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("faasight_ingest_items_accepted_total{signal=\"traces\"} 12"),
        "{metrics}"
    );
    assert!(
        metrics.contains("faasight_ingest_items_accepted_total{signal=\"logs\"} 6"),
        "{metrics}"
    );
}

#[test]
fn js_sdk_over_http_json() {
    let server = TestServer::start();
    let js = repo_root().join("tests/e2e/js");
    let created = run_json(
        Command::new("node")
            .current_dir(&js)
            .arg("send_traces.js")
            .args([server.http_url().as_str(), "js-http", "4"]),
    );
    let spans = created.as_array().expect("spans");
    assert_eq!(spans.len(), 8);
    assert_spans_stored(&server, "js-http", spans);
    assert_handler_columns(&server, "js-http", 4);
    let n = server.count("SELECT count(*) AS n FROM spans WHERE service_name = 'js-http' AND attributes['db.system'] = 'dynamodb'");
    assert_eq!(n, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_opentelemetry_otlp_over_grpc() {
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{Span, SpanKind, TraceContextExt, Tracer, TracerProvider};
    use opentelemetry_otlp::{Compression, WithExportConfig, WithTonicConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    let server = tokio::task::spawn_blocking(TestServer::start)
        .await
        .expect("start");
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(server.grpc_url())
        .with_compression(Compression::Gzip)
        .build()
        .expect("exporter");
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name("rust-grpc")
                .with_attribute(KeyValue::new("faas.name", "rust-grpc-fn"))
                .build(),
        )
        .build();
    let tracer = provider.tracer("faasight-e2e");
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut root = tracer
            .span_builder("handler")
            .with_kind(SpanKind::Server)
            .with_attributes(vec![
                KeyValue::new("faas.invocation_id", format!("rust-grpc-req-{i}")),
                KeyValue::new("faas.coldstart", i == 0),
                KeyValue::new("http.route", "/orders/{id}"),
            ])
            .start(&tracer);
        let root_ctx = root.span_context().clone();
        let cx = opentelemetry::Context::current().with_remote_span_context(root_ctx.clone());
        let mut child = tracer.start_with_context("sqs.SendMessage", &cx);
        let child_ctx = child.span_context().clone();
        child.end();
        root.end();
        ids.push((root_ctx, child_ctx));
    }
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .expect("join")
        .expect("shutdown");
    let server = tokio::task::spawn_blocking(move || {
        assert_handler_columns(&server, "rust-grpc", 5);
        for (root, child) in &ids {
            let rows = server.sql(&format!(
                "SELECT trace_id, parent_span_id FROM spans WHERE span_id = '{}'",
                child.span_id()
            ));
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0]["trace_id"], root.trace_id().to_string());
            assert_eq!(rows[0]["parent_span_id"], root.span_id().to_string());
        }
        server
    })
    .await
    .expect("asserts");
    drop(server);
}
