//! The CloudWatch Logs poller against moto's server as the AWS endpoint:
//! events become logs and invocations, and neither kill -9 nor SIGTERM makes
//! it miss or repeat one.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{TestServer, client_script, python, run_json, wait_until};

struct Moto(Child, String);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let bin = python().with_file_name("moto_server");
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto(child, url)
}

fn put(moto: &Moto, group: &str, first: usize, count: usize) {
    run_json(
        Command::new(python())
            .arg(client_script("cloudwatch_put.py"))
            .args([&moto.1, group, &first.to_string(), &count.to_string()]),
    );
}

fn polls(server: &TestServer) -> u64 {
    server
        .metric("faasight_cloudwatch_polls_total")
        .unwrap_or(0.0) as u64
}

#[test]
fn poller_reads_new_events_once_across_restarts() {
    let moto = start_moto();
    put(&moto, "/aws/lambda/cw-fn", 0, 3);
    put(&moto, "/custom/not-lambda", 100, 1);
    let server = TestServer::builder()
        .args(&[
            "--cloudwatch-region",
            "us-east-1",
            "--cloudwatch-endpoint-url",
            &moto.1,
            "--cloudwatch-poll-interval",
            "300ms",
        ])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .start();
    let invocations = |s: &TestServer| {
        s.count("SELECT count(*) AS n FROM invocations WHERE function_name = 'cw-fn'")
    };
    let logs = |s: &TestServer| s.count("SELECT count(*) AS n FROM logs");
    wait_until("3 invocations", || invocations(&server) == 3);
    let rows = server.sql("SELECT duration_ms, billed_duration_ms, memory_size_mb, function_version FROM invocations WHERE function_name = 'cw-fn' ORDER BY request_id");
    assert_eq!(
        rows[0],
        serde_json::json!({"duration_ms": 10.5, "billed_duration_ms": 11, "memory_size_mb": 256, "function_version": "$LATEST"})
    );
    assert_eq!(logs(&server), 6, "only the /aws/lambda/ group is read");

    // kill -9 and restart: the next polls skip what was read.
    let mut server = server.restart();
    let before = polls(&server);
    let deadline = Instant::now() + Duration::from_secs(30);
    while polls(&server) < before + 2 {
        assert!(
            Instant::now() < deadline,
            "no polls after the restart; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(logs(&server), 6);
    put(&moto, "/aws/lambda/cw-fn", 3, 2);
    wait_until("5 invocations", || invocations(&server) == 5);
    assert_eq!(logs(&server), 10);

    // SIGTERM and restart: the same.
    server.terminate();
    let server = server.restart();
    wait_until("two polls after the clean restart", || polls(&server) >= 2);
    assert_eq!(logs(&server), 10);
    assert_eq!(invocations(&server), 5);
    let (_, m) = server.get("/metrics");
    assert!(m.contains("faasight_cloudwatch_log_groups 1"), "{m}");
    assert!(server.data_dir.join("cloudwatch/checkpoints.json").exists());
}

#[test]
fn import_backfills_once_and_the_poller_continues_without_repeats() {
    let moto = start_moto();
    put(&moto, "/aws/lambda/imp-fn", 0, 4);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let import = || {
        let out = Command::new(crate::support::BIN)
            .args([
                "import",
                "cloudwatch",
                "--since",
                "2h",
                "--log-group-prefix",
                "/aws/lambda/imp",
            ])
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--cloudwatch-region",
                "us-east-1",
                "--cloudwatch-endpoint-url",
                &moto.1,
            ])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .output()
            .expect("import");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = import();
    assert!(
        first.contains("imported 8 events from 1 log groups"),
        "{first}"
    );
    let again = import();
    assert!(
        again.contains("imported 0 events") && again.contains("8 already imported"),
        "{again}"
    );
    // The server on the same directory reads only what is new.
    let server = TestServer::builder()
        .data_dir(&data)
        .args(&[
            "--cloudwatch-region",
            "us-east-1",
            "--cloudwatch-endpoint-url",
            &moto.1,
            "--cloudwatch-poll-interval",
            "300ms",
        ])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .start();
    assert_eq!(
        server.count("SELECT count(*) AS n FROM invocations WHERE function_name = 'imp-fn'"),
        4
    );
    put(&moto, "/aws/lambda/imp-fn", 4, 1);
    wait_until("the new invocation", || {
        server.count("SELECT count(*) AS n FROM invocations WHERE function_name = 'imp-fn'") == 5
    });
    assert_eq!(
        server.count("SELECT count(*) AS n FROM logs WHERE function_name = 'imp-fn'"),
        10
    );
    // A second writer on the same directory is refused while the server runs.
    let out = Command::new(crate::support::BIN)
        .args(["import", "cloudwatch", "--since", "1h", "--data-dir"])
        .arg(&data)
        .args([
            "--cloudwatch-region",
            "us-east-1",
            "--cloudwatch-endpoint-url",
            &moto.1,
        ])
        .output()
        .expect("import");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another faasight"));
}

/// An import that cannot reach CloudWatch says why in one readable line:
/// without credentials, and with nothing listening at the endpoint (the
/// SDK's own text is only "dispatch failure", its `Debug` form a page of
/// nested structs). Nothing is written.
#[test]
fn an_import_that_cannot_reach_cloudwatch_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let import = |endpoint: &str, credentials: bool| {
        let mut cmd = Command::new(crate::support::BIN);
        cmd.args(["import", "cloudwatch", "--since", "1h", "--data-dir"])
            .arg(&data)
            .args([
                "--log-group-prefix",
                "/aws/lambda/",
                "--cloudwatch-region",
                "eu-west-1",
                "--cloudwatch-endpoint-url",
                endpoint,
            ]);
        crate::support::env_remove_prefixed(&mut cmd, "AWS_");
        cmd.env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", dir.path().join("no-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.path().join("no-credentials"),
            );
        if credentials {
            cmd.env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing");
        }
        let out = cmd.output().expect("import");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let error = stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("no error line: {stderr}"))
            .to_string();
        assert!(!error.contains('{') && !error.contains("  "), "{error}");
        error
    };
    // Port 1: nothing listens there.
    let unreachable = "http://127.0.0.1:1";
    let error = import(unreachable, false);
    assert!(
        error.contains("DescribeLogGroups: dispatch failure")
            && error.contains("no providers in chain provided credentials"),
        "{error}"
    );
    let error = import(unreachable, true);
    assert!(error.contains("Connection refused"), "{error}");
    assert!(!data.join("logs").exists());
}
