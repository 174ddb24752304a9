//! Table-driven tests over the real lines of `lambda-samples.txt` (copied
//! here so the crate's tests do not read outside the repository), plus
//! hostile variants.

use super::*;

fn report(line: &str) -> Report {
    match parse(line) {
        Some(PlatformLine::Report(r)) => r,
        other => panic!("not a report: {other:?} from {line:?}"),
    }
}

#[test]
fn classic_report_with_xray_and_init() {
    let r = report(
        "REPORT RequestId: c793869b-ee49-115b-a5b6-4fd21e8dedac\tDuration: 128.83 ms\tBilled Duration: 200 ms\tMemory Size: 128 MB\tMax Memory Used: 74 MB\tInit Duration: 166.62 ms\tXRAY TraceId: 1-5d9d007f-0a8c7fd02xmpl480aed55ef0\tSegmentId: 3d752xmpl1bbe37e\tSampled: true",
    );
    assert_eq!(r.request_id, "c793869b-ee49-115b-a5b6-4fd21e8dedac");
    assert_eq!(r.duration_ms, Some(128.83));
    assert_eq!(r.billed_duration_ms, Some(200));
    assert_eq!(r.memory_size_mb, Some(128));
    assert_eq!(r.max_memory_used_mb, Some(74));
    assert_eq!(r.init_duration_ms, Some(166.62));
    assert_eq!(
        r.xray_trace_id.as_deref(),
        Some("1-5d9d007f-0a8c7fd02xmpl480aed55ef0")
    );
    assert_eq!(r.segment_id.as_deref(), Some("3d752xmpl1bbe37e"));
    assert_eq!(r.sampled, Some(true));
    // "xmpl" is not hex: the documentation's placeholder id maps to nothing.
    assert_eq!(r.w3c_trace_id(), None);
}

#[test]
fn older_style_with_space_before_tab_and_trailing_tab() {
    let r = report(
        "REPORT RequestId: 4ce9340a-b765-490f-ad8a-02ab3415e2bf\tDuration: 26.73 ms\tBilled Duration: 27 ms \tMemory Size: 128 MB\tMax Memory Used: 75 MB\t",
    );
    assert_eq!(r.duration_ms, Some(26.73));
    assert_eq!(r.billed_duration_ms, Some(27));
    assert_eq!(r.max_memory_used_mb, Some(75));
    assert_eq!(r.init_duration_ms, None);
}

#[test]
fn space_separated_report_with_init_billed() {
    let r = report(
        "REPORT RequestId: bf5f58db-ef7d-4cb2-b3c6-266eba1bbedb Duration: 395.99 ms Billed Duration: 662 ms Memory Size: 512 MB Max Memory Used: 301 MB Init Duration: 265.72 ms",
    );
    assert_eq!(r.request_id, "bf5f58db-ef7d-4cb2-b3c6-266eba1bbedb");
    assert_eq!(
        (r.duration_ms, r.billed_duration_ms),
        (Some(395.99), Some(662))
    );
    assert_eq!(
        (r.memory_size_mb, r.max_memory_used_mb),
        (Some(512), Some(301))
    );
    assert_eq!(r.init_duration_ms, Some(265.72));
}

#[test]
fn snapstart_reports() {
    let r = report(
        "REPORT RequestId: b771fecc-1b53-4faf-922d-1d74357b1676\tDuration: 306.34 ms\tBilled Duration: 610 ms\tMemory Size: 3009 MB\tMax Memory Used: 155 MB\tRestore Duration: 511.25 ms\tBilled Restore Duration: 303 ms\t",
    );
    assert_eq!(
        (r.duration_ms, r.billed_duration_ms),
        (Some(306.34), Some(610))
    );
    assert_eq!(
        (r.restore_duration_ms, r.billed_restore_duration_ms),
        (Some(511.25), Some(303))
    );
    let r = report(
        "REPORT RequestId: 24addd09-6e64-49fb-b187-94ba9b60b59a Duration: 127.10 ms Billed Duration: 154 ms Memory Size: 2048 MB Max Memory Used: 212 MB Restore Duration: 325.93 ms Billed Restore Duration: 26 ms XRAY TraceId: 1-66d978e5-56c7378e556e94b5461da07c SegmentId: 29c3839e6ecb5895 Sampled: true",
    );
    assert_eq!(
        (r.restore_duration_ms, r.billed_restore_duration_ms),
        (Some(325.93), Some(26))
    );
    assert_eq!(
        r.w3c_trace_id().as_deref(),
        Some("66d978e556c7378e556e94b5461da07c")
    );
    assert_eq!(r.segment_id.as_deref(), Some("29c3839e6ecb5895"));
}

#[test]
fn timeouts_errors_and_oom() {
    let r = report(
        "REPORT RequestId: 4725a167-21a7-5731-99c2-c3d0e3dfd770\tDuration: 180000.00 ms\tBilled Duration: 180000 ms\tMemory Size: 1280 MB\tMax Memory Used: 1201 MB\tStatus: timeout",
    );
    assert_eq!(r.status.as_deref(), Some("timeout"));
    let r = report(
        "REPORT RequestId: 806ab12b-e660-4a4a-8d9a-eee01e457f98\tDuration: 376256.59 ms\tBilled Duration: 376257 ms\tMemory Size: 10239 MB\tMax Memory Used: 10239 MB\tInit Duration: 551.73 ms\tStatus: error\tError Type: Runtime.OutOfMemory",
    );
    assert_eq!(r.status.as_deref(), Some("error"));
    assert_eq!(r.error_type.as_deref(), Some("Runtime.OutOfMemory"));
    assert_eq!(r.max_memory_used_mb, r.memory_size_mb);
    let r = report(
        "REPORT RequestId: 43e50939ce8c Duration: 3296.38 ms Billed Duration: 3297 ms Memory Size: 128 MB Max Memory Used: 128 MB",
    );
    assert_eq!(r.request_id, "43e50939ce8c");
    assert_eq!(
        parse(
            "RequestId: 43e50939ce8c Error: Runtime exited with error: signal: killed Runtime.ExitError"
        ),
        Some(PlatformLine::RuntimeExited {
            request_id: Some("43e50939ce8c".into()),
            signal_killed: true
        })
    );
    assert_eq!(
        parse(
            "2019-09-18T00:02:46.542Z f2704689-7aa3-4af3-ac88-857c01c4bd45 Task timed out after 5.01 seconds"
        ),
        Some(PlatformLine::Timeout {
            request_id: Some("f2704689-7aa3-4af3-ac88-857c01c4bd45".into()),
            after_seconds: Some(5.01)
        })
    );
    assert_eq!(
        parse(
            r#"{"errorType": "Sandbox.Timedout", "errorMessage": "RequestId: 327ec045-e1e7-45f8-8369-c7950e1a5f6f Error: Task timed out after 3.00 seconds"}"#
        ),
        Some(PlatformLine::Timeout {
            request_id: Some("327ec045-e1e7-45f8-8369-c7950e1a5f6f".into()),
            after_seconds: Some(3.0)
        })
    );
}

#[test]
fn start_end_init_and_restore_lines() {
    assert_eq!(
        parse("START RequestId: c793869b-ee49-115b-a5b6-4fd21e8dedac Version: $LATEST"),
        Some(PlatformLine::Start {
            request_id: "c793869b-ee49-115b-a5b6-4fd21e8dedac".into(),
            version: Some("$LATEST".into())
        })
    );
    assert_eq!(
        parse("END RequestId: c793869b-ee49-115b-a5b6-4fd21e8dedac\n"),
        Some(PlatformLine::End {
            request_id: "c793869b-ee49-115b-a5b6-4fd21e8dedac".into()
        })
    );
    assert_eq!(
        parse(
            "INIT_START Runtime Version: python:3.13.v14    Runtime Version ARN: arn:aws:lambda:eu-south-1::runtime:7b62"
        ),
        Some(PlatformLine::InitStart {
            runtime_version: Some("python:3.13.v14".into())
        })
    );
    assert_eq!(
        parse(
            "RESTORE_START Runtime Version: java:21.mainline.v82\tRuntime Version ARN: arn:aws:lambda:ap-southeast-2::runtime:1a7a"
        ),
        Some(PlatformLine::RestoreStart {
            runtime_version: Some("java:21.mainline.v82".into())
        })
    );
    let cases = [
        (
            "INIT_REPORT Init Duration: 10009.13 ms Phase: init Status: timeout",
            Some(10009.13),
            "init",
            "timeout",
            None,
        ),
        (
            "INIT_REPORT Init Duration: 229.04 ms\tPhase: init\tStatus: error\tError Type: Runtime.ImportModuleError",
            Some(229.04),
            "init",
            "error",
            Some("Runtime.ImportModuleError"),
        ),
        (
            "INIT_REPORT Init Duration: 8431.38 ms\tPhase: invoke\tStatus: error\tError Type: Runtime.ExitError",
            Some(8431.38),
            "invoke",
            "error",
            Some("Runtime.ExitError"),
        ),
    ];
    for (line, init, phase, status, error) in cases {
        assert_eq!(
            parse(line),
            Some(PlatformLine::InitReport(InitReport {
                init_duration_ms: init,
                phase: Some(phase.into()),
                status: Some(status.into()),
                error_type: error.map(String::from),
            })),
            "{line}"
        );
    }
}

#[test]
fn ordinary_and_hostile_lines() {
    assert_eq!(
        parse(
            "2019-06-07T19:11:20.564Z\tc793869b-ee49-115b-a5b6-4fd21e8dedac\tWARN\tEvent not processed."
        ),
        None
    );
    assert_eq!(parse(""), None);
    assert_eq!(parse("REPORT"), None);
    assert_eq!(parse("REPORT RequestId:"), None);
    // Garbage numbers leave the field absent.
    let r = report(
        "REPORT RequestId: abc\tDuration: lots ms\tBilled Duration: -x ms\tMemory Size: 1e999999 MB",
    );
    assert_eq!(
        (r.duration_ms, r.billed_duration_ms, r.memory_size_mb),
        (None, None, None)
    );
    // A 1 MB line is refused without scanning it.
    let long = format!("REPORT RequestId: x\tDuration: {} ms", "9".repeat(1 << 20));
    assert_eq!(parse(&long), None);
    // Non-UTF-8 input arrives lossily decoded; it must not panic.
    let lossy = String::from_utf8_lossy(b"REPORT RequestId: \xff\xfe\tDuration: 1.0 ms");
    assert_eq!(report(&lossy).duration_ms, Some(1.0));
    assert_eq!(
        xray_to_w3c("1-5e34a614-10bdcb5a5fc2ef53b8b4b9bc").as_deref(),
        Some("5e34a61410bdcb5a5fc2ef53b8b4b9bc")
    );
    assert_eq!(xray_to_w3c("2-5e34a614-10bdcb5a5fc2ef53b8b4b9bc"), None);
}
