//! `faasight import cloudwatch --since 7d`: the CloudWatch poller's reader
//! run once as a backfill into a data directory, with a progress spinner and
//! a summary. Checkpoints are shared with the poller, so running it twice,
//! or starting the server afterwards, repeats nothing.

use std::time::Duration;

use faasight_collector::cloudwatch::Poller;

use crate::config::{ServeArgs, ServeConfig, parse_duration};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Flags of `faasight import cloudwatch`.
#[derive(Debug, clap::Args)]
pub(crate) struct CloudWatchImportArgs {
    /// How far back to read, e.g. 7d, 12h
    #[arg(long)]
    since: String,
    /// Log group prefix to read (repeatable); default from the config or /aws/lambda/
    #[arg(long = "log-group-prefix")]
    log_group_prefix: Vec<String>,
    #[command(flatten)]
    serve: ServeArgs,
}

pub(crate) async fn cloudwatch(args: CloudWatchImportArgs) -> Result<(), BoxError> {
    let since = parse_duration("since", &args.since)?;
    let config = ServeConfig::resolve(args.serve)?;
    let Some(mut cw) = config.cloudwatch.clone() else {
        return Err(
            "no CloudWatch settings: set --cloudwatch-region or a [cloudwatch] section".into(),
        );
    };
    if !args.log_group_prefix.is_empty() {
        cw.log_group_prefixes = args.log_group_prefix;
    }
    std::fs::create_dir_all(&config.data_dir)?;
    let (collector, recovery, receiver) = crate::serve::open_collector(&config)?;
    let poller = Poller::new(
        cw,
        receiver,
        collector.flusher.clone(),
        &collector.data_dir,
        recovery.cloudwatch_checkpoints,
    )
    .await?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(format!("reading CloudWatch Logs from {} ago", args.since));
    bar.enable_steady_tick(Duration::from_millis(120));
    let since_ms = chrono::Utc::now().timestamp_millis()
        - i64::try_from(since.as_millis()).unwrap_or(i64::MAX);
    let report = poller.poll_once(since_ms).await;
    bar.finish_and_clear();
    let report = report?;
    let flushed = collector.flusher.flush().await?;
    println!(
        "imported {} events from {} log groups ({} already imported were skipped); {} rows written to {}",
        report.events,
        report.groups,
        report.skipped_duplicates,
        flushed.rows,
        config.data_dir.display()
    );
    Ok(())
}
