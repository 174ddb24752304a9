//! `TestServer`: starts the real `faasight` binary on free ports in a temp
//! data directory, and helpers to drive it with real clients.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_faasight");

pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python, set up by the README test command.
pub(crate) fn python() -> PathBuf {
    std::env::var_os("FAASIGHT_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"))
}

pub(crate) fn client_script(name: &str) -> PathBuf {
    repo_root().join("tests/e2e/clients").join(name)
}

/// Leaves out of `cmd`'s environment every variable of this process whose
/// name starts with `prefix` (`OTEL_`, `AWS_`): the test says what it sets.
pub(crate) fn env_remove_prefixed(cmd: &mut Command, prefix: &str) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with(prefix) {
            cmd.env_remove(name);
        }
    }
}

/// Runs a command to completion; panics with its output unless it succeeds.
pub(crate) fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `faasight generate … --data-dir DIR`; returns its summary line.
pub(crate) fn generate(dir: &Path, args: &[&str]) -> String {
    let out = run_ok(
        Command::new(BIN)
            .arg("generate")
            .args(args)
            .arg("--data-dir")
            .arg(dir),
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// What `faasight query --format FORMAT --data-dir DIR SQL` prints; it
/// must succeed.
pub(crate) fn cli_query(dir: &Path, format: &str, sql: &str) -> String {
    let out = run_ok(
        Command::new(BIN)
            .args(["query", "--format", format, "--data-dir"])
            .arg(dir)
            .arg(sql),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a client to completion and parses the JSON it prints last.
pub(crate) fn run_json(cmd: &mut Command) -> Value {
    let out = run_ok(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("bad JSON from {cmd:?}: {e}: {stdout}"))
}

/// `faasight serve --data-dir DIR` with every listener on a free port.
///
/// Without the repository's example rules (`./rules`, the default rules
/// directory from where cargo runs the tests): they would query every test's
/// data in the background. Tests of rules pass `--rules-dir`, which wins.
pub(crate) fn serve_command(data_dir: &Path) -> Command {
    serve_args(Command::new(BIN), data_dir)
}

/// `cmd` given `serve` and its arguments, as [`serve_command`].
fn serve_args(mut cmd: Command, data_dir: &Path) -> Command {
    cmd.env("FAASIGHT_RULES_DIR", data_dir.join("no-rules"));
    cmd.arg("serve").arg("--data-dir").arg(data_dir).args([
        "--otlp-grpc-addr",
        "127.0.0.1:0",
        "--otlp-http-addr",
        "127.0.0.1:0",
        "--api-addr",
        "127.0.0.1:0",
        "--pg-addr",
        "127.0.0.1:0",
    ]);
    cmd
}

/// The tables and views in `information_schema.tables` (schema `public`).
pub(crate) const PUBLIC_TABLES: [&str; 10] = [
    "alerts",
    "function_stats",
    "invocation_records",
    "invocations",
    "logs",
    "metrics",
    "monthly_costs",
    "prices",
    "spans",
    "trace_costs",
];

/// Builder of a test server.
#[derive(Debug)]
pub(crate) struct TestServerBuilder {
    args: Vec<String>,
    env: Vec<(String, String)>,
    env_removed: Vec<String>,
    data_dir: Option<PathBuf>,
    open_files: Option<u64>,
}

impl TestServerBuilder {
    /// Starts the server with at most `n` open files (soft and hard limit,
    /// through util-linux's `prlimit`). A restart does not keep it.
    pub(crate) fn open_files(mut self, n: u64) -> Self {
        self.open_files = Some(n);
        self
    }

    pub(crate) fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    pub(crate) fn args(mut self, a: &[&str]) -> Self {
        self.args.extend(a.iter().map(|s| s.to_string()));
        self
    }

    pub(crate) fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    /// Starts the server without `k` in its environment, whatever this
    /// process has.
    pub(crate) fn env_remove(mut self, k: &str) -> Self {
        self.env_removed.push(k.to_string());
        self
    }

    pub(crate) fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    pub(crate) fn start(self) -> TestServer {
        let (tmp, data_dir) = match self.data_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().expect("tempdir");
                let d = t.path().join("data");
                (Some(t), d)
            }
        };
        let mut cmd = match self.open_files {
            None => serve_command(&data_dir),
            Some(n) => {
                let mut prlimit = Command::new("prlimit");
                prlimit.arg(format!("--nofile={n}:{n}")).arg("--").arg(BIN);
                serve_args(prlimit, &data_dir)
            }
        };
        for k in &self.env_removed {
            cmd.env_remove(k);
        }
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("FAASIGHT_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start faasight");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read listening line");
        assert!(
            line.starts_with("faasight listening"),
            "unexpected first line {line:?}"
        );
        let field = |k: &str| -> String {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("no {k} in {line:?}"))
                .to_string()
        };
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&l);
                    s.push('\n');
                }
            }
        });
        TestServer {
            child: Some(child),
            grpc: field("otlp_grpc"),
            http: field("otlp_http"),
            api: field("api"),
            pg: field("pg"),
            data_dir,
            args: self.args,
            env: self.env,
            env_removed: self.env_removed,
            log,
            _tmp: tmp,
        }
    }
}

/// A running `faasight serve`.
#[derive(Debug)]
pub(crate) struct TestServer {
    child: Option<Child>,
    pub(crate) grpc: String,
    pub(crate) http: String,
    pub(crate) api: String,
    /// Postgres wire address, `host:port`.
    pub(crate) pg: String,
    pub(crate) data_dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    env_removed: Vec<String>,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    _tmp: Option<tempfile::TempDir>,
}

impl TestServer {
    pub(crate) fn builder() -> TestServerBuilder {
        TestServerBuilder {
            args: Vec::new(),
            env: Vec::new(),
            env_removed: Vec::new(),
            data_dir: None,
            open_files: None,
        }
    }

    pub(crate) fn start() -> TestServer {
        Self::builder().start()
    }

    pub(crate) fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub(crate) fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The server's log once it holds `needle` (stderr is read by a thread,
    /// so a line printed before the listening line may arrive a bit later).
    pub(crate) fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(needle) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs SQL through `POST /api/v1/query`; panics on error.
    pub(crate) fn sql(&self, sql: &str) -> Vec<Value> {
        let (status, body) = self.query_raw(sql, "json");
        assert_eq!(status, 200, "query {sql:?} failed: {body}");
        serde_json::from_str::<Vec<Value>>(&body).unwrap_or_else(|e| panic!("bad JSON {e}: {body}"))
    }

    /// POSTs a JSON body to an ingest path and parses the JSON answer.
    pub(crate) fn post_json(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, Value) {
        let mut req = reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.http_url()))
            .header("content-type", "application/json")
            .body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().expect("send");
        let status = resp.status().as_u16();
        let text = resp.text().expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON answer {e}: {text}")),
        )
    }

    pub(crate) fn query_raw(&self, sql: &str, format: &str) -> (u16, String) {
        let client = reqwest::blocking::Client::new();
        let resp = client
            .post(format!("http://{}/api/v1/query", self.api))
            .json(&serde_json::json!({ "sql": sql, "format": format }))
            .send()
            .expect("query request");
        let status = resp.status().as_u16();
        (status, resp.text().expect("query body"))
    }

    /// A single count from SQL.
    pub(crate) fn count(&self, sql: &str) -> i64 {
        let rows = self.sql(sql);
        rows[0]
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_i64)
            .unwrap_or_else(|| panic!("no count in {rows:?}"))
    }

    pub(crate) fn get(&self, path: &str) -> (u16, String) {
        let resp = reqwest::blocking::Client::new()
            .get(format!("http://{}{path}", self.api))
            .send()
            .expect("get");
        (resp.status().as_u16(), resp.text().expect("body"))
    }

    /// The value of an unlabelled series in `/metrics`, if it is there.
    pub(crate) fn metric(&self, name: &str) -> Option<f64> {
        let (_, metrics) = self.get("/metrics");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Waits (up to 30 s) until running queries hold no memory, and returns
    /// what they hold last: a stopped query must give its memory back.
    pub(crate) fn query_memory_after_settling(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let held = self
                .metric("faasight_query_memory_bytes")
                .expect("faasight_query_memory_bytes in /metrics") as u64;
            if held == 0 || Instant::now() > deadline {
                return held;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's peak resident memory so far (VmHWM), in MiB.
    pub(crate) fn peak_rss_mib(&self) -> f64 {
        self.status_field("VmHWM")
            .and_then(|v| v.trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// A variable of the server process's environment as it runs
    /// (`/proc/PID/environ`).
    pub(crate) fn environ_var(&self, name: &str) -> Option<String> {
        let environ = std::fs::read(format!("/proc/{}/environ", self.pid())).ok()?;
        environ.split(|b| *b == 0).find_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
                .map(str::to_string)
        })
    }

    /// A field of the server's `/proc/PID/status` (e.g. `THP_enabled`).
    pub(crate) fn status_field(&self, name: &str) -> Option<String> {
        status_field(&format!("/proc/{}/status", self.pid()), name)
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).expect("running")
    }

    /// SIGKILL: no flush, no goodbye.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit (code 0).
    pub(crate) fn terminate(&mut self) {
        let status = self.stop_with_sigterm();
        assert!(
            status.success(),
            "faasight exited with {status:?}; log:\n{}",
            self.log()
        );
    }

    /// SIGTERM and wait (up to 30 s) for the exit, whatever its code.
    pub(crate) fn stop_with_sigterm(&mut self) -> std::process::ExitStatus {
        let pid = self.pid();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "faasight did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a new server on the same data directory (new ports).
    pub(crate) fn restart(mut self) -> TestServer {
        self.kill9();
        let mut b = TestServer::builder().data_dir(&self.data_dir);
        b.args = self.args.clone();
        b.env = self.env.clone();
        b.env_removed = self.env_removed.clone();
        let mut next = b.start();
        next._tmp = self._tmp.take();
        next
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `ok` until it holds; fails after 30 s, naming `what`.
pub(crate) fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A field of a `/proc/…/status` file, trimmed.
pub(crate) fn status_field(path: &str, name: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}
