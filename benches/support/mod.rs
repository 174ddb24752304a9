//! Starting the real server for a benchmark: every listener on a free
//! port, the addresses read from its first line; writing its data set.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// A running `faasight serve` and the addresses it printed.
pub(crate) struct Serve {
    pub(crate) child: Child,
    line: String,
}

impl Serve {
    /// `faasight serve --data-dir DIR` plus `extra` flags, all ports 0, and
    /// no alert rules: the default `./rules` (the repository's example
    /// rules, found from the bench's working directory) would run their
    /// queries over the benchmark's data in the background and skew it.
    pub(crate) fn start(data_dir: &Path, extra: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_faasight"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--otlp-grpc-addr",
                "127.0.0.1:0",
                "--otlp-http-addr",
                "127.0.0.1:0",
                "--api-addr",
                "127.0.0.1:0",
                "--pg-addr",
                "127.0.0.1:0",
            ])
            .arg("--rules-dir")
            .arg(data_dir.join("no-rules"))
            .args(extra)
            .env("FAASIGHT_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start faasight");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("listening line");
        Serve { child, line }
    }

    /// The address printed as `key=…` (`otlp_grpc`, `otlp_http`, `api`, `pg`).
    pub(crate) fn addr(&self, key: &str) -> String {
        self.line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {:?}", self.line))
            .to_string()
    }
}

/// `faasight generate --invocations N --functions 50 --days 7 --seed S
/// --until UNTIL` plus `extra` into `data`, timed. (The ingest bench
/// shares this module and writes no data set.)
#[allow(dead_code)]
pub(crate) fn generate(data: &Path, invocations: u64, seed: u64, until: &str, extra: &[&str]) {
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_faasight"))
        .args(["generate", "--invocations", &invocations.to_string()])
        .args([
            "--functions",
            "50",
            "--days",
            "7",
            "--seed",
            &seed.to_string(),
        ])
        .args(["--until", until])
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .status()
        .expect("faasight generate");
    assert!(status.success(), "generate failed");
    println!(
        "generated {invocations} invocations in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The median of `v` (the upper one of an even count).
#[allow(dead_code)] // not every bench takes medians
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
