//! The `faasight` command: `serve` runs everything; `query` runs SQL on a
//! data directory without a server.

mod config;
mod generate;
mod import;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use faasight_query::cost::PriceCatalog;
use faasight_query::format::{self, Format};
use faasight_query::{QueryConfig, QueryEngine};

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
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
