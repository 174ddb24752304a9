//! Settings of `faasight serve`: flags, `FAASIGHT_*` variables, an optional
//! `faasight.toml`, and built-in defaults, in that order of precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

/// Errors in the configuration.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("could not read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid {what} {value:?}: {reason}")]
    Value {
        what: &'static str,
        value: String,
        reason: String,
    },
}

/// Flags of `faasight serve`. Every flag is optional here so that a value
/// from the config file is used when the flag and its variable are absent.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ServeArgs {
    /// TOML config file (every key also has a flag or FAASIGHT_* variable)
    #[arg(long, env = "FAASIGHT_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Where WAL and Parquet files live [default: ./data]
    #[arg(long, env = "FAASIGHT_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// OTLP/gRPC listen address; port 0 picks a free port [default: 127.0.0.1:4317]
    #[arg(long, env = "FAASIGHT_OTLP_GRPC_ADDR")]
    pub(crate) otlp_grpc_addr: Option<SocketAddr>,
    /// OTLP/HTTP and other ingest endpoints [default: 127.0.0.1:4318]
    #[arg(long, env = "FAASIGHT_OTLP_HTTP_ADDR")]
    pub(crate) otlp_http_addr: Option<SocketAddr>,
    /// Query API, health and metrics [default: 127.0.0.1:8080]
    #[arg(long, env = "FAASIGHT_API_ADDR")]
    pub(crate) api_addr: Option<SocketAddr>,
    /// Postgres wire protocol for psql, Grafana and BI tools [default: 127.0.0.1:5433]
    #[arg(long, env = "FAASIGHT_PG_ADDR")]
    pub(crate) pg_addr: Option<SocketAddr>,
    /// Directory of rule files [default: ./rules]
    #[arg(long, env = "FAASIGHT_RULES_DIR")]
    pub(crate) rules_dir: Option<PathBuf>,
    /// How often the buffer is written to Parquet, e.g. 1s, 5m [default: 10s]
    #[arg(long, env = "FAASIGHT_FLUSH_INTERVAL")]
    pub(crate) flush_interval: Option<String>,
    /// Largest request body, compressed or decompressed, e.g. 16MiB; at most 256MiB [default: 16MiB]
    #[arg(long, env = "FAASIGHT_MAX_BODY_SIZE")]
    pub(crate) max_body_size: Option<String>,
    /// Longest a query may run, e.g. 30s [default: 30s]
    #[arg(long, env = "FAASIGHT_QUERY_TIMEOUT")]
    pub(crate) query_timeout: Option<String>,
    /// Most rows a query may return [default: 1000000]
    #[arg(long, env = "FAASIGHT_QUERY_MAX_ROWS")]
    pub(crate) query_max_rows: Option<usize>,
    /// Bytes one query's result may hold, e.g. 64MiB [default: 256MiB]
    #[arg(long, env = "FAASIGHT_QUERY_MAX_RESULT_BYTES")]
    pub(crate) query_max_result_bytes: Option<String>,
    /// Memory all queries may hold together, e.g. 2GiB [default: 2GiB]
    #[arg(long, env = "FAASIGHT_QUERY_MEMORY_LIMIT")]
    pub(crate) query_memory_limit: Option<String>,
    /// Memory one query may hold, e.g. 512MiB [default: half the query memory limit]
    #[arg(long, env = "FAASIGHT_QUERY_MAX_MEMORY")]
    pub(crate) query_max_memory: Option<String>,
    /// Memory the ingest buffer may hold before ingest answers 503 [default: 512MiB]
    #[arg(long, env = "FAASIGHT_MAX_BUFFER_SIZE")]
    pub(crate) max_buffer_size: Option<String>,
    /// Bytes of unflushed WAL before ingest answers 503 [default: 2GiB]
    #[arg(long, env = "FAASIGHT_MAX_WAL_SIZE")]
    pub(crate) max_wal_size: Option<String>,
    /// Price catalog file extending or correcting the shipped prices
    #[arg(long, env = "FAASIGHT_PRICING")]
    pub(crate) pricing: Option<PathBuf>,
    /// Password every Postgres wire client must give (cleartext: use TLS off loopback)
    #[arg(long, env = "FAASIGHT_PG_PASSWORD", hide_env_values = true)]
    pub(crate) pg_password: Option<String>,
    /// PEM certificate chain for TLS on the Postgres wire (with --pg-tls-key)
    #[arg(long, env = "FAASIGHT_PG_TLS_CERT")]
    pub(crate) pg_tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on the Postgres wire
    #[arg(long, env = "FAASIGHT_PG_TLS_KEY")]
    pub(crate) pg_tls_key: Option<PathBuf>,
    /// Access key that Amazon Data Firehose must send to /v1/firehose
    #[arg(long, env = "FAASIGHT_FIREHOSE_ACCESS_KEY", hide_env_values = true)]
    pub(crate) firehose_access_key: Option<String>,
    /// AWS region of the CloudWatch Logs poller; setting it (here or in
    /// `[cloudwatch]`) turns the poller on
    #[arg(long, env = "FAASIGHT_CLOUDWATCH_REGION")]
    pub(crate) cloudwatch_region: Option<String>,
    /// CloudWatch Logs endpoint, for local AWS endpoints
    #[arg(long, env = "FAASIGHT_CLOUDWATCH_ENDPOINT_URL")]
    pub(crate) cloudwatch_endpoint_url: Option<String>,
    /// Log group prefix to read; repeat for several [default: /aws/lambda/]
    #[arg(
        long = "cloudwatch-log-group-prefix",
        env = "FAASIGHT_CLOUDWATCH_LOG_GROUP_PREFIXES",
        value_delimiter = ','
    )]
    pub(crate) cloudwatch_log_group_prefixes: Vec<String>,
    /// How often the poller reads [default: 30s]
    #[arg(long, env = "FAASIGHT_CLOUDWATCH_POLL_INTERVAL")]
    pub(crate) cloudwatch_poll_interval: Option<String>,
    /// How far back the first poll of a group starts [default: 1h]
    #[arg(long, env = "FAASIGHT_CLOUDWATCH_LOOKBACK")]
    pub(crate) cloudwatch_lookback: Option<String>,
    /// Bearer token accepted on ingest; repeat or comma-separate for several
    #[arg(
        long = "ingest-token",
        env = "FAASIGHT_INGEST_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) ingest_tokens: Vec<String>,
    /// Grafana's base URL, linked from alert messages
    #[arg(long, env = "FAASIGHT_GRAFANA_URL")]
    pub(crate) grafana_url: Option<String>,
}

/// The `faasight.toml` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    otlp_grpc_addr: Option<SocketAddr>,
    otlp_http_addr: Option<SocketAddr>,
    api_addr: Option<SocketAddr>,
    pg_addr: Option<SocketAddr>,
    rules_dir: Option<PathBuf>,
    flush_interval: Option<String>,
    max_body_size: Option<String>,
    query_timeout: Option<String>,
    query_max_rows: Option<usize>,
    query_max_result_bytes: Option<String>,
    query_memory_limit: Option<String>,
    query_max_memory: Option<String>,
    max_buffer_size: Option<String>,
    max_wal_size: Option<String>,
    pricing: Option<PathBuf>,
    pg_password: Option<String>,
    pg_tls_cert: Option<PathBuf>,
    pg_tls_key: Option<PathBuf>,
    firehose_access_key: Option<String>,
    #[serde(default)]
    ingest_tokens: Vec<String>,
    cloudwatch: Option<CloudWatchFile>,
    #[serde(default)]
    notifiers: Vec<NotifierFile>,
    grafana_url: Option<String>,
}

/// A `[[notifiers]]` entry; the URL comes from the environment or a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotifierFile {
    pub(crate) name: String,
    pub(crate) kind: faasight_query::rules::notify::NotifierKind,
    pub(crate) webhook_url_env: Option<String>,
    pub(crate) webhook_url_file: Option<PathBuf>,
}

/// The `[cloudwatch]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloudWatchFile {
    region: Option<String>,
    endpoint_url: Option<String>,
    log_group_prefixes: Option<Vec<String>>,
    poll_interval: Option<String>,
    lookback: Option<String>,
}

/// The resolved settings.
#[derive(Debug, Clone)]
pub(crate) struct ServeConfig {
    pub(crate) data_dir: PathBuf,
    pub(crate) otlp_grpc_addr: SocketAddr,
    pub(crate) otlp_http_addr: SocketAddr,
    pub(crate) api_addr: SocketAddr,
    pub(crate) pg_addr: SocketAddr,
    pub(crate) rules_dir: PathBuf,
    pub(crate) flush_interval: Duration,
    pub(crate) max_body_size: usize,
    pub(crate) query_timeout: Duration,
    pub(crate) query_max_rows: usize,
    pub(crate) query_max_result_bytes: usize,
    pub(crate) query_memory_limit: usize,
    pub(crate) query_max_memory: usize,
    pub(crate) max_buffer_size: usize,
    pub(crate) max_wal_size: u64,
    pub(crate) pricing: Option<PathBuf>,
    pub(crate) pg: faasight_query::api::pg::PgConfig,
    pub(crate) ingest_tokens: Vec<String>,
    pub(crate) firehose_access_key: Option<String>,
    pub(crate) cloudwatch: Option<faasight_collector::cloudwatch::CloudWatchConfig>,
    /// Config sections present but not acted on by this version.
    pub(crate) unsupported_sections: Vec<&'static str>,
    pub(crate) notifiers: Vec<NotifierFile>,
    pub(crate) grafana_url: Option<String>,
}

fn addr(s: &str) -> SocketAddr {
    // The literals below are valid addresses.
    s.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
}

pub(crate) fn parse_duration(what: &'static str, s: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(s.trim()).map_err(|e| ConfigError::Value {
        what,
        value: s.into(),
        reason: e.to_string(),
    })
}

/// Sizes like `16MiB`, `512KB`, `1GiB` or plain bytes.
pub(crate) fn parse_size(what: &'static str, s: &str) -> Result<u64, ConfigError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let err = |reason: &str| ConfigError::Value {
        what,
        value: s.into(),
        reason: reason.into(),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| err("expected a number like 16MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(err("unknown unit (use B, KB, KiB, MB, MiB, GB, GiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| err("too large"))
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.into(),
        source: Box::new(source),
    })
}

/// The notifier names a config file defines (none without a file).
pub(crate) fn notifier_names(path: Option<&Path>) -> Result<Vec<String>, ConfigError> {
    Ok(match path {
        Some(p) => read_file(p)?
            .notifiers
            .into_iter()
            .map(|n| n.name)
            .collect(),
        None => Vec::new(),
    })
}

/// The largest `max_body_size`: the receivers let a request's rows repeat
/// up to four times its size (`faasight_collector::receive::MAX_EXPANSION`),
/// and arrow's string columns hold at most 2 GiB each.
const MAX_BODY_SIZE_LIMIT: u64 = 256 << 20;

/// A duration that must be above zero: at zero a timer would fire
/// without pause (a poller calling AWS in a loop) or every query would
/// time out.
fn parse_positive_duration(what: &'static str, s: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(what, s)?;
    if d.is_zero() {
        return Err(not_above_zero(what, s));
    }
    Ok(d)
}

/// A size that must be above zero: at zero every request or query would
/// be refused.
fn parse_positive_size(what: &'static str, s: &str) -> Result<u64, ConfigError> {
    let n = parse_size(what, s)?;
    if n == 0 {
        return Err(not_above_zero(what, s));
    }
    Ok(n)
}

fn not_above_zero(what: &'static str, value: &str) -> ConfigError {
    ConfigError::Value {
        what,
        value: value.into(),
        reason: "must be above zero".into(),
    }
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl ServeConfig {
    pub(crate) fn resolve(args: ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        let unsupported = Vec::new();
        let flush = args
            .flush_interval
            .or(file.flush_interval)
            .unwrap_or_else(|| "10s".into());
        let body = args
            .max_body_size
            .or(file.max_body_size)
            .unwrap_or_else(|| "16MiB".into());
        let timeout = args
            .query_timeout
            .or(file.query_timeout)
            .unwrap_or_else(|| "30s".into());
        let qmem = args
            .query_memory_limit
            .or(file.query_memory_limit)
            .unwrap_or_else(|| "2GiB".into());
        let total_query_memory = parse_positive_size("query memory limit", &qmem)?;
        let query_max_memory = match args.query_max_memory.or(file.query_max_memory) {
            Some(text) => to_usize(parse_positive_size("query max memory", &text)?),
            None => to_usize(total_query_memory / 2),
        };
        let buf = args
            .max_buffer_size
            .or(file.max_buffer_size)
            .unwrap_or_else(|| "512MiB".into());
        let wal = args
            .max_wal_size
            .or(file.max_wal_size)
            .unwrap_or_else(|| "2GiB".into());
        let flush_interval = parse_positive_duration("flush interval", &flush)?;
        let max_body_size = parse_positive_size("max body size", &body)?;
        if max_body_size > MAX_BODY_SIZE_LIMIT {
            return Err(ConfigError::Value {
                what: "max body size",
                value: body,
                reason: "must be at most 256MiB (a request's rows may repeat \
                         its resource up to four times its size, and one column of \
                         one request's rows holds at most 2 GiB)"
                    .into(),
            });
        }
        let max_wal_size = parse_positive_size("max wal size", &wal)?;
        if max_wal_size < max_body_size {
            return Err(ConfigError::Value {
                what: "max wal size",
                value: wal,
                reason: format!(
                    "must be at least the max body size ({body}): a request is \
                     written to the WAL whole, and a larger one could never be"
                ),
            });
        }
        let query_max_rows = args
            .query_max_rows
            .or(file.query_max_rows)
            .unwrap_or(1_000_000);
        if query_max_rows == 0 {
            return Err(not_above_zero("query max rows", "0"));
        }
        let cw = file.cloudwatch.unwrap_or_default();
        let cloudwatch = match args.cloudwatch_region.or(cw.region) {
            None => None,
            Some(region) => {
                let mut prefixes = args.cloudwatch_log_group_prefixes;
                if prefixes.is_empty() {
                    prefixes = cw
                        .log_group_prefixes
                        .unwrap_or_else(|| vec!["/aws/lambda/".into()]);
                }
                let interval = args
                    .cloudwatch_poll_interval
                    .or(cw.poll_interval)
                    .unwrap_or_else(|| "30s".into());
                let lookback = args
                    .cloudwatch_lookback
                    .or(cw.lookback)
                    .unwrap_or_else(|| "1h".into());
                Some(faasight_collector::cloudwatch::CloudWatchConfig {
                    region,
                    endpoint_url: args.cloudwatch_endpoint_url.or(cw.endpoint_url),
                    log_group_prefixes: prefixes,
                    poll_interval: parse_positive_duration("cloudwatch poll interval", &interval)?,
                    lookback: parse_duration("cloudwatch lookback", &lookback)?,
                })
            }
        };
        let mut ingest_tokens = args.ingest_tokens;
        if ingest_tokens.is_empty() {
            ingest_tokens = file.ingest_tokens;
        }
        ingest_tokens.retain(|t| !t.trim().is_empty());
        Ok(ServeConfig {
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| "./data".into()),
            otlp_grpc_addr: args
                .otlp_grpc_addr
                .or(file.otlp_grpc_addr)
                .unwrap_or_else(|| addr("127.0.0.1:4317")),
            otlp_http_addr: args
                .otlp_http_addr
                .or(file.otlp_http_addr)
                .unwrap_or_else(|| addr("127.0.0.1:4318")),
            api_addr: args
                .api_addr
                .or(file.api_addr)
                .unwrap_or_else(|| addr("127.0.0.1:8080")),
            pg_addr: args
                .pg_addr
                .or(file.pg_addr)
                .unwrap_or_else(|| addr("127.0.0.1:5433")),
            rules_dir: args
                .rules_dir
                .or(file.rules_dir)
                .unwrap_or_else(|| "./rules".into()),
            flush_interval,
            max_body_size: to_usize(max_body_size),
            query_timeout: parse_positive_duration("query timeout", &timeout)?,
            query_max_rows,
            query_max_result_bytes: to_usize(parse_positive_size(
                "query max result bytes",
                args.query_max_result_bytes
                    .or(file.query_max_result_bytes)
                    .as_deref()
                    .unwrap_or("256MiB"),
            )?),
            query_memory_limit: to_usize(total_query_memory),
            query_max_memory,
            max_buffer_size: to_usize(parse_positive_size("max buffer size", &buf)?),
            max_wal_size,
            pricing: args.pricing.or(file.pricing),
            pg: faasight_query::api::pg::PgConfig {
                password: args
                    .pg_password
                    .or(file.pg_password)
                    .filter(|p| !p.is_empty()),
                tls_cert: args.pg_tls_cert.or(file.pg_tls_cert),
                tls_key: args.pg_tls_key.or(file.pg_tls_key),
            },
            ingest_tokens,
            firehose_access_key: args
                .firehose_access_key
                .or(file.firehose_access_key)
                .filter(|k| !k.is_empty()),
            cloudwatch,
            unsupported_sections: unsupported,
            notifiers: file.notifiers.clone(),
            grafana_url: args.grafana_url.clone().or(file.grafana_url.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("x", "16MiB").expect("size"), 16 << 20);
        assert_eq!(parse_size("x", "512 KB").expect("size"), 512_000);
        assert_eq!(parse_size("x", "42").expect("size"), 42);
        assert!(parse_size("x", "12 parsecs").is_err());
        assert!(parse_size("x", "MiB").is_err());
        assert_eq!(
            parse_duration("x", "5m").expect("duration"),
            Duration::from_secs(300)
        );
        assert!(parse_duration("x", "soon").is_err());
    }

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("faasight.toml");
        std::fs::write(&path, "flush_interval = \"2s\"\napi_addr = \"127.0.0.1:9999\"\n[cloudwatch]\nregion = \"us-east-1\"\n").expect("write");
        let args = ServeArgs {
            config: Some(path),
            flush_interval: Some("3s".into()),
            ..Default::default()
        };
        let c = ServeConfig::resolve(args).expect("resolves");
        assert_eq!(c.flush_interval, Duration::from_secs(3));
        assert_eq!(c.api_addr, addr("127.0.0.1:9999"));
        assert_eq!(c.otlp_http_addr, addr("127.0.0.1:4318"));
        let cw = c.cloudwatch.expect("cloudwatch on");
        assert_eq!(cw.region, "us-east-1");
        assert_eq!(cw.log_group_prefixes, vec!["/aws/lambda/".to_string()]);
        assert_eq!(cw.poll_interval, Duration::from_secs(30));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "flush_intervall = \"2s\"\n").expect("write");
        let err = ServeConfig::resolve(ServeArgs {
            config: Some(path),
            ..Default::default()
        })
        .expect_err("unknown key");
        assert!(err.to_string().contains("flush_intervall"), "{err}");
        let err = ServeConfig::resolve(ServeArgs {
            flush_interval: Some("0s".into()),
            ..Default::default()
        })
        .expect_err("zero");
        assert!(err.to_string().contains("flush interval"));
        let err = ServeConfig::resolve(ServeArgs {
            max_body_size: Some("257MiB".into()),
            ..Default::default()
        })
        .expect_err("too large");
        assert!(err.to_string().contains("at most 256MiB"), "{err}");
        let ok = ServeConfig::resolve(ServeArgs {
            max_body_size: Some("256MiB".into()),
            ..Default::default()
        })
        .expect("the largest allowed");
        assert_eq!(ok.max_body_size, 256 << 20);
    }

    /// Zero makes each of these settings useless (every request or query
    /// refused, a poller calling AWS without pause): refused at start,
    /// naming the setting.
    #[test]
    fn zero_limits_and_intervals_are_errors() {
        /// One setting set to zero.
        type SetZero = fn(&mut ServeArgs);
        let cases: [(&str, SetZero); 9] = [
            ("query timeout", |a| a.query_timeout = Some("0s".into())),
            ("max body size", |a| a.max_body_size = Some("0".into())),
            ("max buffer size", |a| a.max_buffer_size = Some("0B".into())),
            ("max wal size", |a| a.max_wal_size = Some("0".into())),
            ("query memory limit", |a| {
                a.query_memory_limit = Some("0".into())
            }),
            ("query max memory", |a| {
                a.query_max_memory = Some("0".into())
            }),
            ("query max result bytes", |a| {
                a.query_max_result_bytes = Some("0".into())
            }),
            ("query max rows", |a| a.query_max_rows = Some(0)),
            ("cloudwatch poll interval", |a| {
                a.cloudwatch_region = Some("us-east-1".into());
                a.cloudwatch_poll_interval = Some("0s".into());
            }),
        ];
        for (what, set) in cases {
            let mut args = ServeArgs::default();
            set(&mut args);
            let err = ServeConfig::resolve(args).expect_err(what).to_string();
            assert!(
                err.contains(what) && err.contains("above zero"),
                "{what}: {err}"
            );
        }
        let err = ServeConfig::resolve(ServeArgs {
            max_wal_size: Some("1MiB".into()),
            max_body_size: Some("2MiB".into()),
            ..Default::default()
        })
        .expect_err("a WAL smaller than one request")
        .to_string();
        assert!(
            err.contains("max wal size") && err.contains("at least the max body size"),
            "{err}"
        );
        ServeConfig::resolve(ServeArgs {
            max_wal_size: Some("2MiB".into()),
            max_body_size: Some("2MiB".into()),
            query_timeout: Some("1ms".into()),
            ..Default::default()
        })
        .expect("the smallest allowed");
    }
}
