//! Assembly, critical path and TraceQL on hand-built data.

use super::assemble::{Placement, TraceTree};
use super::critical_path::critical_path;
use super::load::TraceInvocation;
use super::search::{SearchRequest, logfmt, step1_sql, tags_to_query};
use super::summary::{cold_starts, trace_json};
use super::traceql::{Attribute, FieldExpr, Intrinsic, Op, SpansetExpr, Static, parse};
use super::{SpanRecord, parse_trace_id};

const T0: i64 = 1_780_000_000_000_000;

/// A span `id` under `parent`, from `start` to `end` ms after T0.
fn span(id: &str, parent: Option<&str>, start: i64, end: i64) -> SpanRecord {
    SpanRecord {
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
        span_id: id.into(),
        parent_span_id: parent.map(str::to_string),
        name: format!("op-{id}"),
        kind: "internal".into(),
        status_code: "unset".into(),
        start_us: T0 + start * 1000,
        end_us: T0 + end * 1000,
        ..Default::default()
    }
}

fn path_ids(tree: &TraceTree) -> Vec<(String, i64)> {
    critical_path(tree)
        .spans
        .iter()
        .map(|p| (tree.spans[p.span].span_id.clone(), p.self_time_us / 1000))
        .collect()
}

fn ids(v: &[(&str, i64)]) -> Vec<(String, i64)> {
    v.iter().map(|(s, t)| (s.to_string(), *t)).collect()
}

/// Every critical path covers the trace exactly once.
fn assert_covers(tree: &TraceTree) {
    let path = critical_path(tree);
    let (start, end) = tree.bounds();
    let mut at = start;
    for seg in &path.segments {
        assert_eq!(
            seg.start_us, at,
            "segments must be contiguous: {:?}",
            path.segments
        );
        assert!(seg.end_us > seg.start_us || start == end);
        at = seg.end_us;
    }
    assert_eq!(at, end);
}

#[test]
fn single_span_trace() {
    let tree = TraceTree::assemble(vec![span("a", None, 0, 40)]).expect("one span");
    assert_eq!(path_ids(&tree), ids(&[("a", 40)]));
    assert_covers(&tree);
    // An instant span is still its own path.
    let tree = TraceTree::assemble(vec![span("a", None, 5, 5)]).expect("one span");
    assert_eq!(path_ids(&tree), ids(&[("a", 0)]));
}

#[test]
fn sequential_children_share_the_path() {
    // root 0-100: a 10-40, b 40-90 (a then b), c 15-20 inside a's time.
    let tree = TraceTree::assemble(vec![
        span("root", None, 0, 100),
        span("b", Some("root"), 40, 90),
        span("a", Some("root"), 10, 40),
        span("a1", Some("a"), 15, 35),
    ])
    .expect("spans");
    assert_eq!(
        path_ids(&tree),
        ids(&[("root", 20), ("a", 10), ("a1", 20), ("b", 50)])
    );
    assert_covers(&tree);
}

#[test]
fn overlapping_children_hand_over_at_the_later_start() {
    // root 0-100; a 10-90 and b 50-95 run in parallel: b owns 50-95, a
    // (still running at 50) owns 10-50; c 20-30 ends before a does and
    // is hidden behind it.
    let tree = TraceTree::assemble(vec![
        span("root", None, 0, 100),
        span("a", Some("root"), 10, 90),
        span("b", Some("root"), 50, 95),
        span("c", Some("root"), 20, 30),
    ])
    .expect("spans");
    assert_eq!(path_ids(&tree), ids(&[("root", 15), ("a", 40), ("b", 45)]));
    assert_covers(&tree);
}

#[test]
fn the_last_finishing_child_wins_even_when_it_started_first() {
    // a 5-95 outlasts b 10-60: a owns all of 5-95.
    let tree = TraceTree::assemble(vec![
        span("root", None, 0, 100),
        span("a", Some("root"), 5, 95),
        span("b", Some("root"), 10, 60),
    ])
    .expect("spans");
    assert_eq!(path_ids(&tree), ids(&[("root", 10), ("a", 90)]));
}

#[test]
fn clock_skew_is_clipped_to_the_parent() {
    // The child's clock runs 30 ms ahead: it seems to end after its parent.
    let tree = TraceTree::assemble(vec![
        span("root", None, 0, 100),
        span("late", Some("root"), 60, 130),
        span("early", Some("root"), -20, 10),
    ])
    .expect("spans");
    // root owns 10-60; late is clipped to 60-100, early to 0-10. The trace
    // bounds still show the skew (-20..130): untracked time at both ends.
    assert_eq!(
        path_ids(&tree),
        ids(&[("root", 50), ("early", 10), ("late", 40)])
    );
    let path = critical_path(&tree);
    let untracked: i64 = path
        .segments
        .iter()
        .filter(|s| s.span.is_none())
        .map(|s| s.end_us - s.start_us)
        .sum();
    // -20..0 and 100..130 are outside the root: the child spans there are
    // not the root's children's time on the path. The virtual root hands
    // the whole range to the root (0-100) only.
    assert_eq!(untracked, 50_000);
    assert_covers(&tree);
}

#[test]
fn missing_parents_become_flagged_orphans_under_the_root() {
    let tree = TraceTree::assemble(vec![
        span("root", None, 0, 100),
        span("lost", Some("ffffffffffffffff"), 20, 120),
        span("lost-child", Some("lost"), 30, 110),
    ])
    .expect("spans");
    let root = tree.main_root();
    let lost = tree.find("lost").expect("lost");
    assert_eq!(tree.spans[root].span_id, "root");
    assert_eq!(tree.placement[lost], Placement::Orphan);
    assert!(tree.children[root].contains(&lost));
    assert_eq!(tree.roots.len(), 1);
    // Orphans count for the path within the root's window.
    assert_eq!(
        path_ids(&tree),
        ids(&[("root", 20), ("lost", 10), ("lost-child", 70)])
    );
    assert_covers(&tree);
}

#[test]
fn several_roots_and_no_root_at_all() {
    // Two roots (e.g. a queue consumer started a new trace root with a link):
    // the earliest is the main root, and the path spans both with a gap.
    let tree = TraceTree::assemble(vec![
        span("second", None, 150, 200),
        span("first", None, 0, 100),
    ])
    .expect("spans");
    assert_eq!(tree.spans[tree.main_root()].span_id, "first");
    assert_eq!(tree.roots.len(), 2);
    assert_eq!(path_ids(&tree), ids(&[("first", 100), ("second", 50)]));
    assert_covers(&tree);

    // Only orphans: the earliest stands in as root and keeps its flag.
    let tree = TraceTree::assemble(vec![
        span("x", Some("gone"), 10, 50),
        span("y", Some("gone"), 0, 30),
    ])
    .expect("spans");
    let main = tree.main_root();
    assert_eq!(tree.spans[main].span_id, "y");
    assert_eq!(tree.placement[main], Placement::Orphan);
    assert_covers(&tree);
}

#[test]
fn duplicates_and_cycles_do_not_break_the_tree() {
    let tree = TraceTree::assemble(vec![
        span("root", None, 0, 100),
        span("a", Some("b"), 10, 20),
        span("b", Some("a"), 30, 40),
        span("self", Some("self"), 50, 60),
        span("root", None, 0, 100),
    ])
    .expect("spans");
    assert_eq!(tree.spans.len(), 4, "the duplicate root is dropped");
    let a = tree.find("a").expect("a");
    let s = tree.find("self").expect("self");
    assert_eq!(
        tree.placement[a],
        Placement::Orphan,
        "the cycle is cut at its earliest span"
    );
    assert_eq!(tree.placement[s], Placement::Orphan);
    assert_covers(&tree);
}

#[test]
fn a_very_deep_chain_needs_no_recursion() {
    let n = 20_000;
    let mut spans = vec![span("s0", None, 0, 2 * n)];
    for i in 1..n {
        spans.push(span(
            &format!("s{i}"),
            Some(&format!("s{}", i - 1)),
            i,
            2 * n - i,
        ));
    }
    let tree = TraceTree::assemble(spans).expect("spans");
    let path = critical_path(&tree);
    assert_eq!(path.spans.len(), n as usize);
    let json = trace_json(&tree, &path, &[], false);
    // The JSON nests at most MAX_JSON_DEPTH levels and still holds every span.
    let text = serde_json::to_string(&json).expect("serializes");
    // Each span once in the tree and once in the critical path detail.
    assert_eq!(text.matches("\"span_id\":\"s").count(), 2 * n as usize);
    assert_eq!(
        text.matches("\"depth_capped\":true").count(),
        n as usize - 201
    );
}

#[test]
fn cold_starts_on_and_off_the_critical_path() {
    // root (api) calls a (cold, init 300) and, in parallel, b (cold, init 50)
    // which ends earlier: only a is on the path.
    let mut root = span("root", None, 0, 1000);
    root.request_id = Some("r-root".into());
    root.kind = "server".into();
    let mut call_a = span("call-a", Some("root"), 100, 900);
    call_a.kind = "client".into();
    let mut a = span("a", Some("call-a"), 450, 880);
    a.kind = "server".into();
    a.request_id = Some("r-a".into());
    let mut call_b = span("call-b", Some("root"), 100, 300);
    call_b.kind = "client".into();
    let mut b = span("b", Some("call-b"), 160, 290);
    b.kind = "server".into();
    b.request_id = Some("r-b".into());
    let tree = TraceTree::assemble(vec![root, call_a, a, call_b, b]).expect("spans");
    let path = critical_path(&tree);
    let inv = |rid: &str, f: &str, cold: bool, init: Option<f64>, cost: f64| TraceInvocation {
        function_name: f.into(),
        request_id: rid.into(),
        cold_start: cold,
        init_duration_ms: init,
        cost_usd: Some(cost),
        status: "ok".into(),
        ..Default::default()
    };
    let invocations = vec![
        inv("r-root", "api", false, None, 0.001),
        inv("r-a", "worker-a", true, Some(300.0), 0.002),
        inv("r-b", "worker-b", true, Some(50.0), 0.0005),
    ];
    let colds = cold_starts(&tree, &path, &invocations);
    assert_eq!(colds.len(), 2);
    let a = colds.iter().find(|c| c.request_id == "r-a").expect("a");
    assert!(a.on_critical_path);
    // The caller waited 350 ms (100 → 450) of which the init explains 300.
    assert_eq!(a.latency_explained_ms, 300.0);
    let b = colds.iter().find(|c| c.request_id == "r-b").expect("b");
    assert!(!b.on_critical_path);
    assert_eq!(b.latency_explained_ms, 0.0);

    let json = trace_json(&tree, &path, &invocations, false);
    assert!((json["cost_usd"].as_f64().expect("cost") - 0.0035).abs() < 1e-12);
    assert_eq!(json["cost_by_function"]["worker-a"], 0.002);
    assert_eq!(json["span_count"], 5);
    assert_eq!(json["duration_ms"], 1000.0);
    assert_eq!(json["root"]["span_id"], "root");
    assert_eq!(json["root"]["children"][0]["span_id"], "call-a");
    assert_eq!(
        json["critical_path"],
        serde_json::json!(["root", "call-a", "a"])
    );
    assert_eq!(json["cold_start_ms_on_critical_path"], 300.0);
}

/// A trace without cold starts says 0 ms of them, not -0 (the sum of no
/// floats in Rust).
#[test]
fn a_warm_trace_has_zero_cold_start_ms_not_minus_zero() {
    let tree = TraceTree::assemble(vec![span("root", None, 0, 10)]).expect("spans");
    let path = critical_path(&tree);
    let json = trace_json(&tree, &path, &[], false);
    assert_eq!(json["cold_start_ms_on_critical_path"].to_string(), "0.0");
}

#[test]
fn trace_ids_from_urls() {
    assert_eq!(
        parse_trace_id("0AF7651916CD43DD8448EB211C80319C").as_deref(),
        Ok("0af7651916cd43dd8448eb211c80319c")
    );
    assert_eq!(
        parse_trace_id("c80319c").as_deref(),
        Ok("0000000000000000000000000c80319c")
    );
    for bad in [
        "",
        "xyz",
        "0af7651916cd43dd8448eb211c80319c0",
        "0000",
        "12'34",
    ] {
        assert!(parse_trace_id(bad).is_err(), "{bad:?} must be refused");
    }
}

fn cmp(attr: Attribute, op: Op, v: Static) -> FieldExpr {
    FieldExpr::Cmp(attr, op, v)
}

#[test]
fn traceql_parses_filters_and_precedence() {
    let q = parse(r#"{ resource.service.name = "checkout" && span.http.status_code >= 500 || name =~ "GET .*" }"#)
        .expect("valid");
    let SpansetExpr::Filter(Some(FieldExpr::Or(left, right))) = q else {
        panic!("&& binds tighter than ||: {q:?}");
    };
    assert_eq!(
        *left,
        FieldExpr::And(
            Box::new(cmp(
                Attribute::Resource("service.name".into()),
                Op::Eq,
                Static::Str("checkout".into())
            )),
            Box::new(cmp(
                Attribute::Span("http.status_code".into()),
                Op::Ge,
                Static::Int(500)
            )),
        )
    );
    assert_eq!(
        *right,
        cmp(
            Attribute::Intrinsic(Intrinsic::Name),
            Op::Re,
            Static::Str("GET .*".into())
        )
    );

    let q =
        parse("{ duration > 1.5s } && ({ status = error } || { kind = server && .cold = true })")
            .expect("valid");
    let SpansetExpr::And(a, b) = q else {
        panic!("{q:?}")
    };
    assert_eq!(
        *a,
        SpansetExpr::Filter(Some(cmp(
            Attribute::Intrinsic(Intrinsic::Duration),
            Op::Gt,
            Static::Duration(1_500_000_000)
        )))
    );
    assert!(matches!(*b, SpansetExpr::Or(..)));
    assert_eq!(
        q_filters("{} || {name = \"x\"} && {traceDuration < 100ms}"),
        3
    );

    // Forms Grafana sends.
    for ok in [
        "{}",
        "{ }",
        "{.service.name=\"a\"}",
        "{ span:name = \"x\" && trace:duration > 2s && span:status = ok }",
        "{ rootServiceName = \"api\" && rootName != \"GET /health\" }",
        "{ span.\"my attr\" = `raw \\ text` }",
        "{ !(status = error) && span.retries < -1 && span.ratio <= 0.25 }",
        "{ resource.cloud.region !~ \"eu-.*\" && span.db.system = \"dynamodb\" }",
    ] {
        parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

fn q_filters(q: &str) -> usize {
    parse(q).expect("valid").filters().len()
}

#[test]
fn traceql_errors_say_what_is_wrong() {
    for (q, needle) in [
        ("", "expected a spanset filter"),
        ("{", "unexpected end"),
        ("{ name = \"x\" ", "unexpected end"),
        ("{ name = \"x }", "unterminated string"),
        ("{ name }", "needs a comparison"),
        ("{ foo = 1 }", "unknown attribute"),
        ("{ event.name = \"x\" }", "event scope is not supported"),
        ("{} | count() > 2", "pipelines"),
        ("{ name = \"a\" } >> { name = \"b\" }", "structural"),
        ("{ name = \"a\" } > { name = \"b\" }", "structural"),
        ("{ duration > 5 }", "duration like 100ms"),
        ("{ status = 200 }", "status compares"),
        ("{ span.x = ok }", "status and kind keywords"),
        ("{ span.a = span.b }", "comparing two attributes"),
        ("{ span.a + 1 = 2 }", "arithmetic"),
        ("{ duration > 5parsecs }", "duration unit"),
        ("{ span.x =~ 5 }", "need a string"),
        ("{ name = \"\\q\" }", "unknown escape"),
        ("{ name = \"x\" } }", "unexpected '}'"),
        ("{ name = \"x\" } ; drop", "unexpected character"),
    ] {
        let e = parse(q).expect_err(q).to_string();
        assert!(e.contains(needle), "{q:?}: {e:?} should mention {needle:?}");
    }
    let deep = format!("{}{{}}{}", "(".repeat(100), ")".repeat(100));
    assert!(
        parse(&deep)
            .expect_err("too deep")
            .to_string()
            .contains("nesting")
    );
    let long = format!("{{ name = \"{}\" }}", "x".repeat(20_000));
    assert!(
        parse(&long)
            .expect_err("too long")
            .to_string()
            .contains("longer than")
    );
}

/// Step 1's SQL for `q` from `T0` on, 20 traces.
fn search_sql(q: SpansetExpr) -> String {
    step1_sql(&SearchRequest {
        query: q,
        start_us: Some(T0),
        end_us: None,
        min_duration_ms: None,
        max_duration_ms: None,
        limit: 20,
        spans_per_set: 3,
    })
}

#[test]
fn traceql_translates_to_sql_with_quoted_literals() {
    let q = parse(r#"{ span.http.route = "/it's" && span.http.status_code >= 500 } && { traceDuration > 2s }"#).expect("valid");
    let sql = search_sql(q);
    assert!(
        sql.contains("s.attributes['http.route'] = '/it''s'"),
        "{sql}"
    );
    assert!(
        sql.contains("TRY_CAST(s.attributes['http.status_code'] AS DOUBLE) >= 500"),
        "{sql}"
    );
    assert!(sql.contains("t.duration_ms > 2000.000000000"), "{sql}");
    assert!(
        sql.contains("WITH t AS"),
        "trace-level intrinsics need the summary: {sql}"
    );
    assert!(sql.contains("HAVING (bool_or("), "{sql}");
    assert!(sql.contains("LIMIT 20"), "{sql}");
}

/// A chain of one operator becomes flat SQL: 60 conditions or spansets
/// stay within the SQL parser's nesting limit of 50 (a parenthesis per
/// operator did not). Mixed operators keep their grouping.
#[test]
fn long_chains_of_one_operator_are_written_flat() {
    let fields = vec![".a = 1"; 60].join(" && ");
    let spansets = vec!["{ .b = 2 }"; 60].join(" || ");
    let q = parse(&format!("{{ {fields} }} && ({spansets})")).expect("valid");
    let sql = search_sql(q);
    crate::safety::check_sql(&sql).unwrap_or_else(|e| panic!("{e} ({} bytes of SQL)", sql.len()));
    // The trace condition: the 60 spansets' flags in one flat OR.
    assert_eq!(
        sql.matches(") OR bool_or(").count(),
        59,
        "{} bytes of SQL",
        sql.len()
    );

    let mixed = parse("{ .a = 1 && (.b = 2 || .c = 3) && !(.d = 4 && .e = 5) }").expect("valid");
    let filters = mixed.filters();
    let sql = filters[0].as_ref().expect("a condition").to_sql();
    assert_eq!(sql.matches('(').count(), sql.matches(')').count(), "{sql}");
    assert!(sql.starts_with('(') && sql.contains(" AND ("), "{sql}");
    assert!(sql.contains(" OR "), "{sql}");
    assert!(sql.contains("(NOT ("), "{sql}");
}

#[test]
fn tags_in_logfmt() {
    assert_eq!(
        logfmt(r#"service.name=checkout http.route="/a b" status=error"#).expect("valid"),
        vec![
            ("service.name".to_string(), "checkout".to_string()),
            ("http.route".to_string(), "/a b".to_string()),
            ("status".to_string(), "error".to_string()),
        ]
    );
    assert!(logfmt("novalue").is_err());
    assert!(logfmt("k=\"open").is_err());
    let q = tags_to_query("service.name=checkout name=GET").expect("valid");
    let SpansetExpr::Filter(Some(FieldExpr::And(..))) = q else {
        panic!("{q:?}")
    };
}

#[test]
fn searches_that_one_span_decides_can_run_in_windows() {
    let q = |text: &str| parse(text).expect("TraceQL");
    assert!(q("{ kind = server }").per_span());
    assert!(q("{}").per_span());
    assert!(q("{ .a = 1 } || { .b = 2 }").per_span());
    assert!(q("{ .a = 1 && .b = 2 }").per_span());
    assert!(!q("{ .a = 1 } && { .b = 2 }").per_span());
    assert!(!q("({ .a = 1 } && { .b = 2 }) || { .c = 3 }").per_span());
    assert!(!q("{ traceDuration > 1s }").per_span());
    assert!(!q("{ rootName = \"x\" }").per_span());
}
