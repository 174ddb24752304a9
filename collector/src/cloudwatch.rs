//! The CloudWatch Logs poller: discovers log groups by prefix
//! (DescribeLogGroups), reads new events with FilterLogEvents (following
//! `nextToken` through empty pages), and hands them to ingest as CloudWatch
//! subscription messages, so they take the same path as Firehose deliveries.
//!
//! # Checkpoints: neither missed nor repeated
//! Per group the checkpoint is the newest event timestamp read and the ids
//! of the events at that timestamp (CloudWatch's `startTime` is inclusive,
//! so those ids are skipped next time: dedupe by `eventId`).
//! The checkpoint travels inside the WAL record with its events, so a crash
//! after the acknowledgement replays both together; it is also written to
//! `DATA_DIR/cloudwatch/checkpoints.json` while the flush is held off, so a
//! flush can never delete the WAL record before the file has caught up.
//! At start the checkpoint is the newer of the file and the replayed WAL.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::buffer::Flusher;
use crate::decode::firehose::{LogEvent, Subscription};
use crate::receive::{AcceptError, Receiver};

/// Settings of the `[cloudwatch]` section.
#[derive(Debug, Clone)]
pub struct CloudWatchConfig {
    pub region: String,
    pub endpoint_url: Option<String>,
    pub log_group_prefixes: Vec<String>,
    pub poll_interval: Duration,
    pub lookback: Duration,
}

/// Where reading a group stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub timestamp_ms: i64,
    pub event_ids: Vec<String>,
}

impl Checkpoint {
    /// The later of two checkpoints (ids merged when they share a timestamp).
    pub fn max(self, other: Checkpoint) -> Checkpoint {
        match self.timestamp_ms.cmp(&other.timestamp_ms) {
            std::cmp::Ordering::Greater => self,
            std::cmp::Ordering::Less => other,
            std::cmp::Ordering::Equal => {
                let mut ids = self.event_ids;
                ids.extend(other.event_ids);
                ids.sort();
                ids.dedup();
                Checkpoint {
                    timestamp_ms: self.timestamp_ms,
                    event_ids: ids,
                }
            }
        }
    }
}

/// The body of a CloudWatch WAL record.
#[derive(Debug, Serialize, Deserialize)]
pub struct PolledBatch {
    pub group: String,
    pub checkpoint: Checkpoint,
    pub messages: Vec<Subscription>,
}

/// Errors of one poll.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("cloudwatch logs api: {0}")]
    Api(String),
    #[error(transparent)]
    Accept(#[from] AcceptError),
    #[error("checkpoint file {path}: {source}")]
    Checkpoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What one poll did.
#[derive(Debug, Default, Clone)]
pub struct PollReport {
    pub groups: usize,
    pub events: usize,
    pub skipped_duplicates: usize,
}

/// The poller.
#[derive(Debug, Clone)]
pub struct Poller {
    client: aws_sdk_cloudwatchlogs::Client,
    config: CloudWatchConfig,
    receiver: Receiver,
    flusher: Flusher,
    path: PathBuf,
    checkpoints: Arc<Mutex<BTreeMap<String, Checkpoint>>>,
}

/// At most this many events go into one WAL record.
const MAX_EVENTS_PER_RECORD: usize = 10_000;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Poller {
    /// Builds the client (credentials from the standard AWS chain) and
    /// loads checkpoints, merged with those replayed from the WAL.
    pub async fn new(
        config: CloudWatchConfig,
        receiver: Receiver,
        flusher: Flusher,
        data_dir: &std::path::Path,
        replayed: BTreeMap<String, Checkpoint>,
    ) -> Result<Self, PollError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(config.region.clone()));
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let client = aws_sdk_cloudwatchlogs::Client::new(&loader.load().await);
        let path = data_dir.join("cloudwatch").join("checkpoints.json");
        let mut checkpoints: BTreeMap<String, Checkpoint> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(_) => BTreeMap::new(),
        };
        for (group, cp) in replayed {
            let merged = checkpoints.remove(&group).unwrap_or_default().max(cp);
            checkpoints.insert(group, merged);
        }
        Ok(Poller {
            client,
            config,
            receiver,
            flusher,
            path,
            checkpoints: Arc::new(Mutex::new(checkpoints)),
        })
    }

    async fn with_backoff<T, E, F, Fut>(&self, what: &str, mut call: F) -> Result<T, PollError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: ProvideErrorMetadata + std::error::Error,
    {
        let metrics = &self.receiver.metrics;
        let mut delay = Duration::from_millis(500);
        for attempt in 0.. {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let code = e.code().unwrap_or_default().to_string();
                    let throttled = code.contains("Throttling")
                        || code.contains("LimitExceeded")
                        || code.contains("TooManyRequests");
                    if throttled && attempt < 6 {
                        metrics.cloudwatch_throttled.add(1);
                        tracing::warn!(what, attempt, ?delay, "cloudwatch throttled; backing off");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(30));
                        continue;
                    }
                    let message = e
                        .message()
                        .map(String::from)
                        .unwrap_or_else(|| error_chain(&e));
                    let code = if code.is_empty() { code } else { code + " " };
                    return Err(PollError::Api(format!("{what}: {code}{message}")));
                }
            }
        }
        Err(PollError::Api(format!("{what}: gave up")))
    }

    /// The log groups matching the configured prefixes.
    pub async fn groups(&self) -> Result<Vec<String>, PollError> {
        let mut groups = Vec::new();
        for prefix in &self.config.log_group_prefixes {
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .with_backoff("DescribeLogGroups", || {
                        self.client
                            .describe_log_groups()
                            .log_group_name_prefix(prefix)
                            .set_next_token(token.clone())
                            .send()
                    })
                    .await?;
                groups.extend(
                    page.log_groups()
                        .iter()
                        .filter_map(|g| g.log_group_name().map(String::from)),
                );
                match page.next_token() {
                    Some(t) if Some(t) != token.as_deref() => token = Some(t.to_string()),
                    _ => break,
                }
            }
        }
        groups.sort();
        groups.dedup();
        Ok(groups)
    }

    /// Reads every group once from its checkpoint (or `since_ms` when it has none).
    pub async fn poll_once(&self, since_ms: i64) -> Result<PollReport, PollError> {
        let groups = self.groups().await?;
        let mut report = PollReport {
            groups: groups.len(),
            ..Default::default()
        };
        self.receiver
            .metrics
            .cloudwatch_groups
            .set(groups.len() as u64);
        for group in groups {
            let (events, skipped) = self.poll_group(&group, since_ms).await?;
            report.events += events;
            report.skipped_duplicates += skipped;
        }
        self.receiver.metrics.cloudwatch_polls.add(1);
        Ok(report)
    }

    async fn poll_group(&self, group: &str, since_ms: i64) -> Result<(usize, usize), PollError> {
        let start = self.checkpoints.lock().get(group).cloned();
        let start = start.unwrap_or(Checkpoint {
            timestamp_ms: since_ms,
            event_ids: Vec::new(),
        });
        let mut token: Option<String> = None;
        let mut fresh: Vec<(String, LogEvent)> = Vec::new();
        let mut skipped = 0;
        let mut total = 0;
        loop {
            let page = self
                .with_backoff("FilterLogEvents", || {
                    self.client
                        .filter_log_events()
                        .log_group_name(group)
                        .start_time(start.timestamp_ms)
                        .set_next_token(token.clone())
                        .send()
                })
                .await?;
            for e in page.events() {
                let (Some(ts), Some(id)) = (e.timestamp(), e.event_id()) else {
                    continue;
                };
                if ts < start.timestamp_ms
                    || (ts == start.timestamp_ms && start.event_ids.iter().any(|s| s == id))
                {
                    skipped += 1;
                    continue;
                }
                let stream = e.log_stream_name().unwrap_or_default().to_string();
                let event = LogEvent {
                    id: id.to_string(),
                    timestamp: ts,
                    message: e.message().unwrap_or_default().to_string(),
                };
                fresh.push((stream, event));
            }
            // Pages may be empty while a token remains: follow it.
            let next = page.next_token().map(String::from);
            if fresh.len() >= MAX_EVENTS_PER_RECORD || next.is_none() {
                total += fresh.len();
                self.submit(group, &start, std::mem::take(&mut fresh))
                    .await?;
            }
            match next {
                Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                _ => break,
            }
        }
        Ok((total, skipped))
    }

    /// Makes one batch durable with its checkpoint, then saves the file
    /// while flushes are held off.
    async fn submit(
        &self,
        group: &str,
        start: &Checkpoint,
        events: Vec<(String, LogEvent)>,
    ) -> Result<(), PollError> {
        if events.is_empty() {
            return Ok(());
        }
        let previous = self
            .checkpoints
            .lock()
            .get(group)
            .cloned()
            .unwrap_or_else(|| start.clone());
        let newest = events
            .iter()
            .map(|(_, e)| e.timestamp)
            .max()
            .unwrap_or(previous.timestamp_ms);
        let ids = events
            .iter()
            .filter(|(_, e)| e.timestamp == newest)
            .map(|(_, e)| e.id.clone())
            .collect();
        let checkpoint = previous.max(Checkpoint {
            timestamp_ms: newest,
            event_ids: ids,
        });
        let mut by_stream: BTreeMap<String, Vec<LogEvent>> = BTreeMap::new();
        for (stream, e) in events {
            by_stream.entry(stream).or_default().push(e);
        }
        let messages = by_stream
            .into_iter()
            .map(|(log_stream, log_events)| Subscription {
                message_type: "DATA_MESSAGE".into(),
                owner: None,
                log_group: group.to_string(),
                log_stream,
                log_events,
            })
            .collect();
        let batch = PolledBatch {
            group: group.to_string(),
            checkpoint: checkpoint.clone(),
            messages,
        };
        let body = serde_json::to_vec(&batch).map_err(|e| PollError::Api(e.to_string()))?;
        let _no_flush = self.flusher.hold().await;
        self.receiver.accept_cloudwatch(&body).await?;
        let snapshot = {
            let mut map = self.checkpoints.lock();
            map.insert(group.to_string(), checkpoint);
            serde_json::to_vec_pretty(&*map).unwrap_or_default()
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| PollError::Checkpoint {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        crate::wal::write_atomic(&self.path, &snapshot).map_err(|source| PollError::Checkpoint {
            path: self.path.clone(),
            source,
        })
    }

    /// Polls every `poll_interval` until `stop` resolves; failures are
    /// logged and counted, and the next poll retries.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let since =
                now_ms() - i64::try_from(self.config.lookback.as_millis()).unwrap_or(i64::MAX);
            match self.poll_once(since).await {
                Ok(r) => tracing::debug!(
                    groups = r.groups,
                    events = r.events,
                    skipped = r.skipped_duplicates,
                    "cloudwatch poll"
                ),
                Err(e) => {
                    self.receiver.metrics.cloudwatch_errors.add(1);
                    tracing::warn!(error = %e, "cloudwatch poll failed; retrying at the next interval");
                }
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }
}

/// An error and its causes, each said once: the SDK's own text of a
/// failure that never reached AWS is only "dispatch failure", and its
/// `Debug` form is a page of nested structs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}
