//! Traces end to end: a trace across three functions sent with the
//! OpenTelemetry Python SDK, its invocations posted as Lambda would report
//! them; the trace view (tree, critical path, cold start, cost), the Tempo
//! API (parsed with the official proto definitions), search by tags and
//! TraceQL, tag listings, and `trace_costs` in SQL.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{TestServer, client_script, python, run_json};

fn get(url: &str) -> (u16, String) {
    let resp = reqwest::blocking::Client::new()
        .get(url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (resp.status().as_u16(), resp.text().expect("body"))
}

fn get_json(url: &str) -> Value {
    let (status, body) = get(url);
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: bad JSON {e}: {body}"))
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

/// Trace ids found by a search.
fn search(server: &TestServer, params: &[(&str, &str)]) -> Vec<String> {
    let url = reqwest::Url::parse_with_params(&format!("http://{}/api/search", server.api), params)
        .expect("url");
    let v = get_json(url.as_str());
    v["traces"]
        .as_array()
        .expect("traces")
        .iter()
        .map(|t| t["traceID"].as_str().expect("traceID").to_string())
        .collect()
}

#[test]
fn a_trace_across_three_functions_with_a_cold_start() {
    let server = TestServer::start();
    let sent = run_json(
        Command::new(python())
            .arg(client_script("send_trace.py"))
            .args(["--endpoint", &server.http_url()]),
    );
    let trace_id = sent["trace_id"].as_str().expect("trace id").to_string();
    let other = sent["other_trace_id"].as_str().expect("other").to_string();
    let span = |name: &str| sent["spans"][name].as_str().expect(name).to_string();
    let rid = |f: &str| sent["request_ids"][f].as_str().expect(f).to_string();
    let t0_ms = sent["start_ns"].as_i64().expect("start") / 1_000_000;

    // What Lambda reported for the three invocations (orders was cold:
    // 250 ms init, billed with the invocation since 2025-08-01).
    let invocations = json!([
        {"time": t0_ms, "function_name": "api", "request_id": rid("api"), "provider": "aws",
         "region": "eu-west-1", "architecture": "x86_64", "duration_ms": 1000.0,
         "billed_duration_ms": 1000, "memory_size_mb": 512, "max_memory_used_mb": 120, "status": "ok"},
        {"time": t0_ms + 150, "function_name": "orders", "request_id": rid("orders"), "provider": "aws",
         "region": "eu-west-1", "architecture": "arm64", "cold_start": true, "init_duration_ms": 250.0,
         "duration_ms": 530.0, "billed_duration_ms": 780, "memory_size_mb": 1024,
         "max_memory_used_mb": 300, "status": "ok"},
        {"time": t0_ms + 470, "function_name": "payments", "request_id": rid("payments"), "provider": "aws",
         "region": "eu-west-1", "architecture": "x86_64", "duration_ms": 420.0,
         "billed_duration_ms": 420, "memory_size_mb": 256, "max_memory_used_mb": 100, "status": "error"}
    ]);
    let (status, answer) = server.post_json("/v1/invocations", &[], &invocations.to_string());
    assert_eq!(status, 200, "{answer}");

    // Acknowledged data is visible within a second.
    let url = format!("http://{}/api/v1/traces/{trace_id}", server.api);
    let deadline = Instant::now() + Duration::from_secs(5);
    let view = loop {
        let (status, body) = get(&url);
        if status == 200 {
            let v: Value = serde_json::from_str(&body).expect("json");
            if v["span_count"] == 9 && v["invocations"].as_array().is_some_and(|a| a.len() == 3) {
                break v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "trace not complete in time: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    // The tree: the api's server span is the root; its children by start.
    assert_eq!(view["trace_id"], trace_id.as_str());
    assert_eq!(view["root"]["span_id"], span("POST /checkout").as_str());
    assert_eq!(view["root"]["service_name"], "api");
    assert_eq!(view["root"]["attributes"]["http.route"], "/checkout");
    let children: Vec<&str> = view["root"]["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(children, ["validate", "invoke orders", "prefetch"]);
    let orders = &view["root"]["children"][1]["children"][0];
    assert_eq!(orders["name"], "orders handler");
    assert_eq!(orders["service_name"], "orders");
    assert_eq!(orders["cold_start"], true);
    assert!(close(
        view["duration_ms"].as_f64().expect("duration"),
        1000.0,
        0.01
    ));
    assert_eq!(view["orphan_count"], 0);

    // The critical path and the self time of each span on it (ms).
    let expected = [
        ("POST /checkout", 100.0),
        ("validate", 50.0),
        ("invoke orders", 320.0),
        ("orders handler", 80.0),
        ("invoke payments", 30.0),
        ("payments handler", 70.0),
        ("charge card", 350.0),
    ];
    let path: Vec<String> = view["critical_path"]
        .as_array()
        .expect("path")
        .iter()
        .map(|s| s.as_str().expect("id").to_string())
        .collect();
    assert_eq!(
        path,
        expected.iter().map(|(n, _)| span(n)).collect::<Vec<_>>()
    );
    for (detail, (name, self_ms)) in view["critical_path_detail"]
        .as_array()
        .expect("detail")
        .iter()
        .zip(expected)
    {
        assert_eq!(detail["name"], name);
        let got = detail["self_time_ms"].as_f64().expect("self time");
        assert!(
            close(got, self_ms, 0.01),
            "{name}: self time {got}, expected {self_ms}"
        );
    }

    // One cold start, on the critical path: the caller waited 300 ms for
    // the handler to start, 250 ms of it the init.
    let colds = view["cold_starts"].as_array().expect("cold starts");
    assert_eq!(colds.len(), 1, "{colds:?}");
    assert_eq!(colds[0]["function_name"], "orders");
    assert_eq!(colds[0]["request_id"], rid("orders").as_str());
    assert_eq!(colds[0]["init_duration_ms"], 250.0);
    assert_eq!(colds[0]["on_critical_path"], true);
    assert_eq!(colds[0]["span_id"], span("orders handler").as_str());
    assert_eq!(colds[0]["latency_explained_ms"], 250.0);

    // Cost, by hand with the eu-west-1 list prices ($0.20 per million
    // requests; $0.0000166667 per GB-s x86_64, $0.0000133334 arm64):
    //   api      1.000 s × 0.5  GB × 0.0000166667 + 0.0000002 = 0.00000853335
    //   orders   0.780 s × 1.0  GB × 0.0000133334 + 0.0000002 = 0.000010600052
    //   payments 0.420 s × 0.25 GB × 0.0000166667 + 0.0000002 = 0.0000019500035
    let by_hand = [
        ("api", 0.00000853335),
        ("orders", 0.000010600052),
        ("payments", 0.0000019500035),
    ];
    let total: f64 = by_hand.iter().map(|(_, c)| c).sum();
    let cost = view["cost_usd"].as_f64().expect("cost");
    assert!(close(cost, total, 1e-12), "cost {cost} vs {total}");
    for (f, c) in by_hand {
        let got = view["cost_by_function"][f].as_f64().expect(f);
        assert!(close(got, c, 1e-12), "{f}: {got} vs {c}");
    }

    // Unknown and malformed ids.
    let (status, body) = get(&format!(
        "http://{}/api/v1/traces/{}",
        server.api,
        "ab".repeat(16)
    ));
    assert_eq!(status, 404, "{body}");
    let (status, body) = get(&format!(
        "http://{}/api/v1/traces/not-a-trace-id",
        server.api
    ));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("hex"), "{body}");

    // The second trace keeps its link to the checkout's charge span, in the
    // trace view and in Tempo's protobuf.
    let linked = get_json(&format!("http://{}/api/v1/traces/{other}", server.api));
    assert_eq!(linked["root"]["links"][0]["trace_id"], trace_id.as_str());
    assert_eq!(
        linked["root"]["links"][0]["span_id"],
        span("charge card").as_str()
    );
    assert_eq!(
        linked["root"]["links"][0]["attributes"]["messaging.operation"],
        "process"
    );
    assert_eq!(
        linked["cost_usd"],
        Value::Null,
        "no invocations were reported for it"
    );
    let forms = run_json(
        Command::new(python())
            .arg(client_script("tempo_check.py"))
            .args([
                "--api",
                &format!("http://{}", server.api),
                "--trace-id",
                &other,
            ]),
    );
    assert_eq!(
        forms["v2_protobuf"]["spans"][0]["links"],
        json!([[trace_id, span("charge card")]])
    );

    tempo_trace_by_id(&server, &trace_id, &sent);
    tempo_search(&server, &trace_id, &other, &sent);
    tempo_tags(&server);

    // Cost per trace and per route in SQL.
    let rows = server.sql(&format!(
        "SELECT route, root_service_name, root_name, invocations, functions, cold_starts, errors, cost_usd \
         FROM trace_costs WHERE trace_id = '{trace_id}'"
    ));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["route"], "/checkout");
    assert_eq!(rows[0]["root_service_name"], "api");
    assert_eq!(rows[0]["root_name"], "POST /checkout");
    assert_eq!(rows[0]["invocations"], 3);
    assert_eq!(rows[0]["functions"], 3);
    assert_eq!(rows[0]["cold_starts"], 1);
    assert_eq!(rows[0]["errors"], 1);
    assert!(close(
        rows[0]["cost_usd"].as_f64().expect("cost"),
        total,
        1e-12
    ));
    let rows = server.sql(
        "SELECT date_trunc('day', time) AS day, route, sum(cost_usd) AS cost_usd \
         FROM trace_costs GROUP BY 1, 2 ORDER BY cost_usd DESC",
    );
    assert_eq!(rows[0]["route"], "/checkout", "{rows:?}");
}

fn tempo_trace_by_id(server: &TestServer, trace_id: &str, sent: &Value) {
    let forms = run_json(
        Command::new(python())
            .arg(client_script("tempo_check.py"))
            .args([
                "--api",
                &format!("http://{}", server.api),
                "--trace-id",
                trace_id,
            ]),
    );
    let api_spans = ["POST /checkout", "validate", "prefetch", "invoke orders"];
    let expected: BTreeSet<(String, String)> = sent["spans"]
        .as_object()
        .expect("spans")
        .iter()
        .filter(|(name, _)| *name != "GET /health")
        .map(|(name, id)| (id.as_str().expect("id").to_string(), name.clone()))
        .collect();
    assert_eq!(expected.len(), 9);
    for form in ["v1_json", "v2_json", "v1_protobuf", "v2_protobuf"] {
        let f = &forms[form];
        let ctype = f["content_type"].as_str().unwrap_or_default();
        if form.ends_with("protobuf") {
            assert_eq!(ctype, "application/protobuf", "{form}");
        } else {
            assert!(ctype.starts_with("application/json"), "{form}: {ctype}");
        }
        let spans = f["spans"].as_array().expect("spans");
        let got: BTreeSet<(String, String)> = spans
            .iter()
            .map(|s| {
                (
                    s["span_id"].as_str().expect("id").to_string(),
                    s["name"].as_str().expect("name").to_string(),
                )
            })
            .collect();
        assert_eq!(got, expected, "{form} must hold every span");
        for s in spans {
            assert_eq!(s["trace_id"], trace_id, "{form}");
            let name = s["name"].as_str().expect("name");
            let want = if api_spans.contains(&name) {
                "api"
            } else if name.starts_with("payments") || name == "charge card" {
                "payments"
            } else {
                "orders"
            };
            assert_eq!(s["service"], want, "{form}: service of {name}");
            let dur = s["end"].as_u64().expect("end") - s["start"].as_u64().expect("start");
            if name == "POST /checkout" {
                assert_eq!(dur, 1_000_000_000, "{form}: root duration in ns");
                assert_eq!(s["kind"], 2, "{form}: SPAN_KIND_SERVER");
                assert_eq!(s["parent_span_id"], "", "{form}");
            }
            if name == "charge card" {
                assert_eq!(s["status"], 2, "{form}: STATUS_CODE_ERROR");
            }
        }
    }
    // Unknown trace: 404 in every form.
    let (status, _) = get(&format!(
        "http://{}/api/traces/{}",
        server.api,
        "cd".repeat(16)
    ));
    assert_eq!(status, 404);
    let (status, _) = get(&format!(
        "http://{}/api/v2/traces/{}",
        server.api,
        "cd".repeat(16)
    ));
    assert_eq!(status, 404);
    let (status, _) = get(&format!("http://{}/api/traces/zz", server.api));
    assert_eq!(status, 400);
    let (status, body) = get(&format!("http://{}/api/echo", server.api));
    assert_eq!((status, body.as_str()), (200, "echo"));
    let info = get_json(&format!("http://{}/api/status/buildinfo", server.api));
    assert!(
        info["version"].as_str().is_some_and(|v| v.starts_with('2')),
        "{info}"
    );
}

fn tempo_search(server: &TestServer, trace: &str, other: &str, sent: &Value) {
    let both = vec![other.to_string(), trace.to_string()];
    let one = |id: &str| vec![id.to_string()];
    for (params, expected) in [
        (vec![("tags", "service.name=payments")], one(trace)),
        (vec![("tags", "http.route=/health")], one(other)),
        (
            vec![("tags", "service.name=api http.route=/checkout")],
            one(trace),
        ),
        (
            vec![(
                "q",
                r#"{ resource.service.name = "payments" && span.card.brand = "visa" }"#,
            )],
            one(trace),
        ),
        (vec![("q", "{ status = error }")], one(trace)),
        (vec![("q", r#"{ name = "GET /health" }"#)], one(other)),
        (
            vec![(
                "q",
                r#"{ rootServiceName = "api" } && { resource.service.name = "orders" }"#,
            )],
            one(trace),
        ),
        (
            vec![(
                "q",
                r#"{ name = "GET /health" } || { .card.brand =~ "vi.*" }"#,
            )],
            both.clone(),
        ),
        (vec![("q", "{ traceDuration < 500ms }")], one(other)),
        (
            vec![("q", "{ kind = server && duration > 900ms }")],
            one(trace),
        ),
        (vec![("q", "{ span.card.brand !~ \"vi.*\" }")], vec![]),
        // Quotes in literals stay literals.
        (vec![("q", r#"{ name = "x' OR '1'='1" }"#)], vec![]),
        (vec![("tags", r#"name="x' OR '1'='1""#)], vec![]),
        (vec![("q", "{}")], both.clone()),
        (vec![("q", "{}"), ("limit", "1")], one(other)),
        (vec![("minDuration", "500ms")], one(trace)),
        (vec![("maxDuration", "100ms")], one(other)),
    ] {
        assert_eq!(search(server, &params), expected, "search {params:?}");
    }
    // Time range (unix seconds): before the traces → nothing; around them → both.
    let t0 = sent["start_ns"].as_i64().expect("start") / 1_000_000_000;
    let (before_s, before_e) = ((t0 - 100).to_string(), (t0 - 50).to_string());
    assert!(
        search(
            server,
            &[("q", "{}"), ("start", &before_s), ("end", &before_e)]
        )
        .is_empty()
    );
    let (s, e) = ((t0 - 10).to_string(), (t0 + 60).to_string());
    assert_eq!(
        search(server, &[("q", "{}"), ("start", &s), ("end", &e)]),
        both
    );
    // Bounds past what a timestamp holds (years 5138 and -1199) mean "no
    // bound"; before, planning failed on them with an Arrow cast error.
    assert_eq!(
        search(
            server,
            &[
                ("q", "{}"),
                ("start", "-99999999999"),
                ("end", "99999999999")
            ]
        ),
        both
    );
    assert_eq!(
        search(
            server,
            &[
                ("q", r#"{ name = "GET /health" }"#),
                ("start", "0"),
                ("end", "99999999999")
            ]
        ),
        one(other)
    );
    let tags = get_json(&format!(
        "http://{}/api/search/tags?start=0&end=99999999999",
        server.api
    ));
    assert!(
        strings(&tags["tagNames"]).contains(&"service.name".to_string()),
        "{tags}"
    );

    // The metadata Grafana shows, and the spans that matched.
    let url = reqwest::Url::parse_with_params(
        &format!("http://{}/api/search", server.api),
        [("q", r#"{ span.card.brand = "visa" }"#)],
    )
    .expect("url");
    let v = get_json(url.as_str());
    let hit = &v["traces"][0];
    assert_eq!(hit["traceID"], trace);
    assert_eq!(hit["rootServiceName"], "api");
    assert_eq!(hit["rootTraceName"], "POST /checkout");
    assert_eq!(hit["durationMs"], 1000);
    let start_ns: i64 = hit["startTimeUnixNano"]
        .as_str()
        .expect("ns string")
        .parse()
        .expect("ns");
    assert_eq!(
        start_ns / 1000,
        sent["start_ns"].as_i64().expect("start") / 1000
    );
    assert_eq!(hit["spanSets"][0]["matched"], 1);
    assert_eq!(
        hit["spanSets"][0]["spans"][0]["spanID"],
        sent["spans"]["charge card"]
    );
    assert_eq!(hit["spanSets"][0]["spans"][0]["durationNanos"], "350000000");

    // Refusals say what is wrong.
    for (q, needle) in [
        ("{ span.a = ", "TraceQL"),
        ("{} | count() > 1", "pipelines"),
        ("{ name = \"a\" } >> { name = \"b\" }", "structural"),
    ] {
        let url = reqwest::Url::parse_with_params(
            &format!("http://{}/api/search", server.api),
            [("q", q)],
        )
        .expect("url");
        let (status, body) = get(url.as_str());
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body.contains(needle), "{q}: {body}");
    }
    for bad in [
        ("limit", "x"),
        ("minDuration", "fast"),
        ("start", "yesterday"),
        ("tags", "novalue"),
    ] {
        let url =
            reqwest::Url::parse_with_params(&format!("http://{}/api/search", server.api), [bad])
                .expect("url");
        let (status, body) = get(url.as_str());
        assert_eq!(status, 400, "{bad:?}: {body}");
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

fn tempo_tags(server: &TestServer) {
    let api = format!("http://{}", server.api);
    let names = strings(&get_json(&format!("{api}/api/search/tags"))["tagNames"]);
    for tag in [
        "http.route",
        "card.brand",
        "service.name",
        "cloud.region",
        "faas.invocation_id",
    ] {
        assert!(
            names.iter().any(|n| n == tag),
            "{tag} missing from {names:?}"
        );
    }
    let v2 = get_json(&format!("{api}/api/v2/search/tags"));
    let scope = |name: &str| {
        v2["scopes"]
            .as_array()
            .expect("scopes")
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| strings(&s["tags"]))
            .unwrap_or_else(|| panic!("no scope {name}: {v2}"))
    };
    assert!(scope("span").contains(&"card.brand".to_string()));
    assert!(!scope("span").contains(&"cloud.region".to_string()));
    assert!(scope("resource").contains(&"cloud.region".to_string()));
    assert!(scope("intrinsic").contains(&"duration".to_string()));
    let only = get_json(&format!("{api}/api/v2/search/tags?scope=resource"));
    assert_eq!(only["scopes"].as_array().map(Vec::len), Some(1));

    let services =
        strings(&get_json(&format!("{api}/api/search/tag/service.name/values"))["tagValues"]);
    assert_eq!(services, ["api", "orders", "payments"]);
    let typed = get_json(&format!(
        "{api}/api/v2/search/tag/resource.service.name/values"
    ));
    assert_eq!(
        typed["tagValues"],
        json!([
            {"type": "string", "value": "api"},
            {"type": "string", "value": "orders"},
            {"type": "string", "value": "payments"}
        ])
    );
    let routes = get_json(&format!("{api}/api/v2/search/tag/span.http.route/values"));
    assert_eq!(
        routes["tagValues"],
        json!([{"type": "string", "value": "/checkout"}, {"type": "string", "value": "/health"}])
    );
    let status = get_json(&format!("{api}/api/v2/search/tag/status/values"));
    assert!(
        status["tagValues"]
            .as_array()
            .expect("values")
            .contains(&json!({"type": "keyword", "value": "error"})),
        "{status}"
    );
    let (code, body) = get(&format!("{api}/api/v2/search/tag/bogus/values"));
    assert_eq!(code, 400, "{body}");
}

/// A lookup by trace id reads only the files that can hold the trace: the
/// bloom filters on `trace_id` rule the rest out before they are opened
/// (DataFusion's own scan metrics, from `EXPLAIN ANALYZE`).
#[test]
fn trace_lookup_prunes_row_groups_with_bloom_filters() {
    let dir = tempfile::tempdir().expect("tempdir");
    crate::support::generate(
        dir.path(),
        &[
            "--invocations",
            "4000",
            "--functions",
            "10",
            "--days",
            "1",
            "--seed",
            "7",
            "--trace-share",
            "1.0",
            "--until",
            "2026-11-28T00:00:00Z",
        ],
    );
    let server = TestServer::builder().data_dir(dir.path()).start();
    let files = server
        .count("SELECT count(*) AS n FROM (SELECT DISTINCT date_trunc('hour', time) FROM spans)");
    assert!(files >= 20, "one file per hour over a day, got {files}");
    // A trace id from the middle of the range, so min/max statistics alone
    // cannot rule files out.
    let roots = server.count("SELECT count(*) AS n FROM spans WHERE parent_span_id IS NULL");
    let id = server.sql(&format!(
        "SELECT trace_id FROM spans WHERE parent_span_id IS NULL ORDER BY trace_id LIMIT 1 OFFSET {}",
        roots / 2
    ))[0]["trace_id"]
        .as_str()
        .expect("id")
        .to_string();
    let rows = server.sql(&format!(
        "EXPLAIN ANALYZE SELECT count(*) FROM spans WHERE trace_id = '{id}'"
    ));
    let plan: String = rows
        .iter()
        .filter_map(|r| r["plan"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    // `name=T total → M matched`
    let metric = |name: &str| -> (i64, i64) {
        let at = plan
            .find(&format!("{name}="))
            .unwrap_or_else(|| panic!("no {name} in the plan:\n{plan}"));
        let text = &plan[at + name.len() + 1..];
        let numbers: Vec<i64> = text
            .split(|c: char| !c.is_ascii_digit())
            .filter(|t| !t.is_empty())
            .take(2)
            .map(|t| t.parse().expect("number"))
            .collect();
        (numbers[0], numbers[1])
    };
    // faasight's id index (the files' bloom filters, held in memory) hands
    // the scan only the files that can hold the id; DataFusion's own row
    // group pruning then checks those.
    let (opened, _) = metric("files_opened");
    assert!(
        (1..=2).contains(&opened),
        "a lookup opened {opened} of {files} files:\n{plan}"
    );
    let (groups, matched) = metric("row_groups_pruned_statistics");
    assert!(groups <= 2 && matched <= groups, "{plan}");
    // The same query with the id hidden from pruning opens every file.
    let rows = server.sql(&format!(
        "EXPLAIN ANALYZE SELECT count(*) FROM spans WHERE lower(trace_id) = '{id}'"
    ));
    let plan: String = rows
        .iter()
        .filter_map(|r| r["plan"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let at = plan.find("files_opened=").expect("files_opened");
    let all: i64 = plan[at + 13..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("n");
    assert!(
        all >= files,
        "without the id predicate every file is read ({all} of {files})"
    );
    // The coalesced invocations are looked up the same way: a request id
    // opens the file (of one per hour) that holds it.
    let request = server.sql(&format!(
        "SELECT request_id FROM invocations WHERE trace_id = '{id}' LIMIT 1"
    ))[0]["request_id"]
        .as_str()
        .expect("the trace has an invocation")
        .to_string();
    let opened = |sql: &str| -> i64 {
        let plan: String = server
            .sql(&format!("EXPLAIN ANALYZE {sql}"))
            .iter()
            .filter_map(|r| r["plan"].as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let at = plan.find("files_opened=").expect("files_opened");
        plan[at + 13..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .expect("n")
    };
    let by_id = opened(&format!(
        "SELECT count(*) FROM invocations WHERE request_id = '{request}'"
    ));
    let hidden = opened(&format!(
        "SELECT count(*) FROM invocations WHERE lower(request_id) = '{request}'"
    ));
    // (A second file is a bloom filter false positive, as above.)
    assert!(
        (1..=2).contains(&by_id),
        "a request id opened {by_id} of {hidden} invocation files"
    );
    assert!(
        hidden >= 20,
        "without the id every hour's file is read ({hidden})"
    );
    let view = get_json(&format!("http://{}/api/v1/traces/{id}", server.api));
    assert!(
        view["span_count"].as_u64().is_some_and(|n| n >= 1),
        "{view}"
    );
    assert!(
        view["cost_usd"].as_f64().is_some_and(|c| c > 0.0),
        "generated traces are priced: {view}"
    );

    // A search that one span decides runs backwards in growing windows; it
    // must answer exactly like the same search run over the whole range at
    // once (`{ X } && { X }` means the same but is never windowed).
    let day = ("1795737600", "1795824000"); // 2026-11-27T00:00Z .. 2026-11-28T00:00Z
    for (q, limit) in [
        ("{ kind = server }", "5"),
        ("{ kind = server }", "300"),
        ("{ status = error }", "50"),
        ("{ span.http.route =~ \"/.*\" }", "20"),
    ] {
        let whole = format!("{q} && {q}");
        for range in [None, Some(day)] {
            let mut a = vec![("q", q), ("limit", limit)];
            let mut b = vec![("q", whole.as_str()), ("limit", limit)];
            if let Some((s, e)) = range {
                a.extend([("start", s), ("end", e)]);
                b.extend([("start", s), ("end", e)]);
            }
            let (windowed, at_once) = (search(&server, &a), search(&server, &b));
            assert!(!at_once.is_empty(), "{q}: nothing found");
            assert_eq!(windowed, at_once, "{q} limit {limit} range {range:?}");
        }
    }
}

/// `faasight generate` makes traces Lambda could have made: a caller stopped
/// at its timeout makes no more calls, and a call still out then ends with
/// it, unanswered, while the callee runs on. (Before, such a call's client
/// span ran on past its caller, up to 15 s past a root that had ended.)
#[test]
fn generated_calls_end_by_their_callers_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    crate::support::generate(
        dir.path(),
        &[
            "--invocations",
            "20000",
            "--functions",
            "20",
            "--days",
            "1",
            "--seed",
            "3",
            "--trace-share",
            "1.0",
            "--until",
            "2026-11-28T00:00:00Z",
        ],
    );
    let one = |sql: &str| -> Value {
        let rows: Value = serde_json::from_str(&crate::support::cli_query(dir.path(), "json", sql))
            .expect("json");
        rows[0].clone()
    };
    assert_eq!(one("SELECT count(*) AS n FROM invocations")["n"], 20000);
    let calls = "spans c JOIN spans p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id";
    let shape = one(&format!(
        "SELECT count(*) AS calls, \
                sum(CASE WHEN c.end_time > p.end_time THEN 1 ELSE 0 END) AS past_caller, \
                sum(CASE WHEN c.time >= p.end_time THEN 1 ELSE 0 END) AS after_caller \
         FROM {calls} WHERE c.kind = 'client'"
    ));
    assert!(shape["calls"].as_i64().expect("calls") > 10_000, "{shape}");
    assert_eq!(shape["past_caller"], 0, "{shape}");
    assert_eq!(shape["after_caller"], 0, "{shape}");
    // The calls cut by a timeout: each ends with its caller, marked as an
    // error; the caller's invocation timed out; the callee ran on.
    let cut = one(&format!(
        "SELECT count(*) AS cut, \
                sum(CASE WHEN c.end_time = p.end_time THEN 1 ELSE 0 END) AS with_caller, \
                sum(CASE WHEN i.status = 'timeout' THEN 1 ELSE 0 END) AS timed_out, \
                sum(CASE WHEN k.end_time > p.end_time THEN 1 ELSE 0 END) AS callee_ran_on \
         FROM {calls} \
         JOIN invocations i ON i.request_id = p.request_id \
         JOIN spans k ON k.trace_id = c.trace_id AND k.parent_span_id = c.span_id \
         WHERE c.kind = 'client' AND c.status_code = 'error'"
    ));
    let n = cut["cut"].as_i64().expect("cut");
    assert!(
        n > 0,
        "this seed has callers stopped at their timeout: {cut}"
    );
    assert_eq!(cut["with_caller"], n, "{cut}");
    assert_eq!(cut["timed_out"], n, "{cut}");
    assert!(cut["callee_ran_on"].as_i64().expect("n") > 0, "{cut}");
}
