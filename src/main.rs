//! The `faasight` command: `serve` runs everything; `query` runs SQL on a
//! data directory without a server.

mod config;
mod generate;
mod idle;
mod import;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use faasight_query::cost::PriceCatalog;
use faasight_query::format::{self, Format};
use faasight_query::{QueryConfig, QueryEngine};

/// mimalloc instead of glibc's malloc: one-span requests allocate a few
/// hundred small objects each on the tokio workers that the WAL writer and
/// the flush free on other threads, where glibc spent a third of the CPU
/// (benches/ingest-report.md: +30–40 % requests/s at 32 connections).
/// DataFusion's own CLI makes the same choice.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process unless mimalloc's own
/// `MIMALLOC_ALLOW_THP` is set (then mimalloc's option decides). mimalloc
/// asks for huge pages on its arenas, and where the kernel's THP `defrag`
/// setting is `madvise` (a common default) a query that grows its memory
/// stalls in the page faults while the kernel compacts memory for them: the
/// first p99 query over 10M invocations took 1.2–2× as long with huge
/// pages, at ~100 MB more resident memory (benches/query-report.md). The
/// flag is the process's, not a thread's.
fn disable_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        // Only a slower first query: say so and go on.
        eprintln!("warning: could not turn transparent huge pages off: {e}");
    }
}

/// How long (ms) mimalloc keeps freed memory before handing it back to the
/// kernel, for `faasight serve`; mimalloc's own default is 1000. Under heavy
/// ingest a flush frees a few hundred MiB every few seconds, and after 1 s
/// the next requests and the next flush fault all of it in again. With
/// 5000, the server spent 5–8 % less CPU per 512-span request for 24–54 MiB
/// more resident memory (benches/ingest-report.md, 2026-12-03 20:40
/// update); memory still goes back to the kernel 5 s after it is freed.
const SERVE_PURGE_DELAY_MS: &str = "5000";

/// The environment variable mimalloc reads its purge delay from.
const PURGE_DELAY_VAR: &str = "MIMALLOC_PURGE_DELAY";

/// Runs this program again in place with [`PURGE_DELAY_VAR`] set to
/// [`SERVE_PURGE_DELAY_MS`], unless the variable is set already (a choice
/// of the user's, or this is the second run). mimalloc reads its options
/// from the environment when the process starts, before `main`, and setting
/// one from Rust needs `unsafe`, which this workspace forbids. `exec` keeps
/// the process id, the arguments, the environment and the open files (the
/// supervisor's pipes), so a supervisor sees one process. Returns only when
/// the exec fails; faasight then runs on with mimalloc's default.
#[cfg(target_os = "linux")]
fn exec_with_purge_delay() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(PURGE_DELAY_VAR).is_some() {
        return;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!(
                "warning: could not find this program to set {PURGE_DELAY_VAR} ({e}); running with the allocator's default"
            );
            return;
        }
    };
    let mut args = std::env::args_os();
    let mut again = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        again.arg0(arg0);
    }
    let e = again
        .args(args)
        .env(PURGE_DELAY_VAR, SERVE_PURGE_DELAY_MS)
        .exec();
    eprintln!(
        "warning: could not restart with {PURGE_DELAY_VAR}={SERVE_PURGE_DELAY_MS} ({e}); running with the allocator's default"
    );
}

/// Traces, cold starts and cost for serverless functions.
#[derive(Debug, Parser)]
#[command(name = "faasight", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the collector, the query API and the flush, with embedded defaults
    Serve(Box<config::ServeArgs>),
    /// Backfill from an external source into a data directory (no server may
    /// be running on it)
    Import {
        #[command(subcommand)]
        source: ImportSource,
    },
    /// Write a realistic synthetic data set straight to Parquet
    Generate(Box<generate::GenerateArgs>),
    /// Check rule files, or try them on a data directory
    Rules {
        #[command(subcommand)]
        action: RulesCommand,
    },
    /// Run SQL on a data directory without a server
    Query {
        /// Data directory to read [default: ./data]
        #[arg(long, env = "FAASIGHT_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: CliFormat,
        /// Longest the query may run
        #[arg(long, default_value = "5m")]
        timeout: String,
        /// Price catalog file extending the shipped prices
        #[arg(long, env = "FAASIGHT_PRICING")]
        pricing: Option<PathBuf>,
        /// The SQL statement (read-only)
        sql: String,
    },
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Parse every rule file, plan every rule's SQL against the real schema,
    /// check conditions, templates and notifier names; exit 1 on any error
    Check {
        /// The rules directory
        dir: PathBuf,
        /// faasight.toml, for the notifier names
        #[arg(long, env = "FAASIGHT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Evaluate every rule once on a data directory and print, as JSON, the
    /// subjects whose condition holds (no state, nothing sent)
    Eval {
        /// The rules directory
        dir: PathBuf,
        /// Data directory to read [default: ./data]
        #[arg(long, env = "FAASIGHT_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Price catalog file extending the shipped prices
        #[arg(long, env = "FAASIGHT_PRICING")]
        pricing: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ImportSource {
    /// Read CloudWatch Logs once, from `--since` ago (or each group's
    /// checkpoint), with the poller's reader and checkpoints
    Cloudwatch(Box<import::CloudWatchImportArgs>),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CliFormat {
    Table,
    Csv,
    Json,
    Ndjson,
}

impl From<CliFormat> for Format {
    fn from(f: CliFormat) -> Format {
        match f {
            CliFormat::Table => Format::Table,
            CliFormat::Csv => Format::Csv,
            CliFormat::Json => Format::Json,
            CliFormat::Ndjson => Format::Ndjson,
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FAASIGHT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn query(
    data_dir: PathBuf,
    format: Format,
    timeout: String,
    pricing: Option<PathBuf>,
    sql: String,
) -> Result<(), BoxError> {
    if !data_dir.is_dir() {
        return Err(format!("no data directory at {}", data_dir.display()).into());
    }
    let (buffer, _) = faasight_collector::open_read_only(&data_dir)?;
    let engine = QueryEngine::new(
        buffer,
        QueryConfig {
            timeout: config::parse_duration("timeout", &timeout)?,
            pricing: std::sync::Arc::new(PriceCatalog::load(pricing.as_deref())?),
            data_dir: Some(data_dir.clone()),
            ..QueryConfig::default()
        },
    )?;
    let result = engine.execute(&sql).await?;
    let bytes = format::encode(format, &result.schema, &result.batches)?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)?;
    if format == Format::Json {
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn rule_errors(errors: &[faasight_query::rules::load::RuleError]) -> BoxError {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!(
        "{} problem(s) in the rules:\n  {}",
        lines.len(),
        lines.join("\n  ")
    )
    .into()
}

async fn rules(action: RulesCommand) -> Result<(), BoxError> {
    use faasight_query::rules::load;
    match action {
        RulesCommand::Check { dir, config } => {
            let rules = load::load_dir(&dir).map_err(|e| rule_errors(&e))?;
            let configured = config::notifier_names(config.as_deref())?;
            // With no notifier configured, alerts are only shown by the API.
            let allowed: Vec<String> = if configured.is_empty() {
                rules.iter().flat_map(|r| r.notify.clone()).collect()
            } else {
                configured.clone()
            };
            let engine = QueryEngine::new(
                faasight_collector::buffer::Buffer::new(),
                QueryConfig::default(),
            )?;
            let problems = load::check(&engine, &rules, &allowed).await;
            if !problems.is_empty() {
                return Err(rule_errors(&problems));
            }
            let files: std::collections::BTreeSet<_> =
                rules.iter().map(|r| r.file.clone()).collect();
            println!("ok: {} rules in {} files", rules.len(), files.len());
            if configured.is_empty() {
                println!("note: no notifiers configured; alerts would only show at /api/v1/alerts");
            }
            Ok(())
        }
        RulesCommand::Eval {
            dir,
            data_dir,
            pricing,
        } => {
            let rules = load::load_dir(&dir).map_err(|e| rule_errors(&e))?;
            if !data_dir.is_dir() {
                return Err(format!("no data directory at {}", data_dir.display()).into());
            }
            let (buffer, _) = faasight_collector::open_read_only(&data_dir)?;
            let engine = QueryEngine::new(
                buffer,
                QueryConfig {
                    pricing: std::sync::Arc::new(PriceCatalog::load(pricing.as_deref())?),
                    data_dir: Some(data_dir.clone()),
                    ..QueryConfig::default()
                },
            )?;
            let mut out = Vec::new();
            for rule in &rules {
                let found = faasight_query::rules::evaluate::dry_run(&engine, rule)
                    .await
                    .map_err(|e| format!("rule {}: {e}", rule.name))?;
                for o in found {
                    out.push(serde_json::json!({
                        "rule": rule.name,
                        "severity": rule.severity.as_str(),
                        "labels": o.labels,
                        "value": o.value,
                        "savings_usd_month": o.savings_usd_month,
                        "message": o.message,
                    }));
                }
            }
            println!("{}", serde_json::Value::Array(out));
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(target_os = "linux")]
    if matches!(cli.command, Command::Serve(_)) {
        exec_with_purge_delay();
    }
    disable_transparent_huge_pages();
    init_tracing();
    // DataFusion clones, plans and evaluates expressions recursively: 8 MiB
    // stacks (tokio's default is 2 MiB) give the deepest expression that
    // `faasight_query::safety` lets through several times the room it needs.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(8 << 20)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(config::ServeConfig::resolve(*args)?).await,
            Command::Query {
                data_dir,
                format,
                timeout,
                pricing,
                sql,
            } => query(data_dir, format.into(), timeout, pricing, sql).await,
            Command::Generate(args) => generate::run(*args).await,
            Command::Rules { action } => rules(action).await,
            Command::Import {
                source: ImportSource::Cloudwatch(args),
            } => import::cloudwatch(*args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
