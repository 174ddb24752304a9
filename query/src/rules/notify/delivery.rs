//! Delivery: one worker per notifier posts the queued messages in order,
//! at most one per second, honouring `Retry-After` on 429, retrying 5xx and
//! network errors with capped exponential backoff (1 s doubling to 5 min),
//! dropping a message the webhook refuses (other 4xx) or that could not be
//! delivered for 24 h, and counting every outcome. The queue lives in the
//! persisted alert state, so a restart resumes it. The URL is never logged:
//! errors are reported with their status or kind only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::Notifier;
use crate::catalog::alerts::AlertBoard;
use crate::rules::RuleMetrics;
use crate::rules::state::{StateDoc, StateStore};

const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_BACKOFF_SECS: u64 = 300;
const MAX_RETRY_AFTER_SECS: u64 = 3600;
const GIVE_UP_AFTER_US: i64 = 24 * 3600 * 1_000_000;

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Try again after this long.
    Retry(Duration, String),
    /// The webhook refused it for good.
    Refused(String),
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// `Retry-After` in seconds (or an HTTP date), within [1 s, 1 h].
pub fn retry_after(value: Option<&str>) -> Duration {
    let secs = value
        .and_then(|v| {
            let v = v.trim();
            v.parse::<u64>().ok().or_else(|| {
                chrono::DateTime::parse_from_rfc2822(v)
                    .ok()
                    .map(|t| (t.timestamp() - chrono::Utc::now().timestamp()).max(0) as u64)
            })
        })
        .unwrap_or(1);
    Duration::from_secs(secs.clamp(1, MAX_RETRY_AFTER_SECS))
}

pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(
        1u64.checked_shl(attempts.min(16))
            .unwrap_or(MAX_BACKOFF_SECS)
            .min(MAX_BACKOFF_SECS),
    )
}

/// Posts one message.
pub async fn post(
    client: &reqwest::Client,
    n: &Notifier,
    body: &serde_json::Value,
    attempts: u32,
) -> Outcome {
    let resp = client
        .post(n.url.expose())
        .timeout(Duration::from_secs(10))
        .json(body)
        .send()
        .await;
    match resp {
        Ok(r) if r.status().is_success() => Outcome::Delivered,
        Ok(r) if r.status().as_u16() == 429 => {
            let after = r.headers().get("retry-after").and_then(|v| v.to_str().ok());
            Outcome::Retry(retry_after(after), "429 too many requests".into())
        }
        Ok(r) if r.status().is_server_error() || r.status().as_u16() == 408 => {
            Outcome::Retry(backoff(attempts), format!("status {}", r.status().as_u16()))
        }
        Ok(r) => Outcome::Refused(format!("status {}", r.status().as_u16())),
        // `without_url`: the error must not carry the secret URL.
        Err(e) => Outcome::Retry(backoff(attempts), e.without_url().to_string()),
    }
}

/// The delivery side of the rules engine.
#[derive(Debug)]
pub struct Deliverer {
    pub doc: Arc<Mutex<StateDoc>>,
    pub store: StateStore,
    pub metrics: Arc<RuleMetrics>,
    pub wake: Arc<Notify>,
    pub client: reqwest::Client,
    /// Where the alerts are published for the `alerts` SQL table.
    pub board: Arc<AlertBoard>,
}

impl Deliverer {
    /// Shows the current alerts in the `alerts` SQL table.
    pub fn publish(&self) {
        let alerts = self.doc.lock().alerts.values().cloned().collect();
        self.board.publish(alerts);
    }

    /// Persists the state and publishes its alerts to SQL.
    pub fn save(&self) {
        self.publish();
        if let Err(e) = self.persist() {
            tracing::error!(error = %e, "could not save the alert state");
        }
    }

    /// Writes the state as it is when this save's turn comes (saves run at
    /// once: every rule evaluates on its own task).
    pub(crate) fn persist(&self) -> std::io::Result<()> {
        self.store.save_current(&self.doc)
    }

    /// Delivers `n`'s queue until `stop` resolves.
    pub async fn run(self: Arc<Self>, n: Notifier, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut last_post: Option<Instant> = None;
        loop {
            // The head of this notifier's queue (first in, first out).
            let head = {
                let doc = self.doc.lock();
                doc.deliveries
                    .iter()
                    .filter(|d| d.notifier == n.name)
                    .min_by_key(|d| d.id)
                    .cloned()
            };
            let wait = match &head {
                None => Duration::from_secs(3600),
                Some(d) => {
                    Duration::from_micros(u64::try_from(d.next_attempt_us - now_us()).unwrap_or(0))
                }
            };
            if head.is_none() || !wait.is_zero() {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(wait.min(Duration::from_secs(3600))) => {}
                }
                continue;
            }
            let Some(d) = head else { continue };
            if let Some(t) = last_post {
                let since = t.elapsed();
                if since < MIN_INTERVAL {
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = tokio::time::sleep(MIN_INTERVAL - since) => {}
                    }
                }
            }
            last_post = Some(Instant::now());
            let outcome = tokio::select! {
                _ = &mut stop => return,
                o = post(&self.client, &n, &d.body, d.attempts) => o,
            };
            {
                let mut doc = self.doc.lock();
                let now = now_us();
                let Some(pos) = doc.deliveries.iter().position(|x| x.id == d.id) else {
                    continue;
                };
                match &outcome {
                    Outcome::Delivered => {
                        doc.deliveries.remove(pos);
                        self.metrics.sent.add(1);
                        tracing::info!(notifier = %n.name, rule = %d.rule, status = d.status.as_str(), "alert delivered");
                    }
                    Outcome::Retry(after, why) if now - d.created_us < GIVE_UP_AFTER_US => {
                        let entry = &mut doc.deliveries[pos];
                        entry.attempts += 1;
                        entry.next_attempt_us =
                            now + i64::try_from(after.as_micros()).unwrap_or(i64::MAX / 2);
                        self.metrics.retries.add(1);
                        tracing::warn!(notifier = %n.name, rule = %d.rule, reason = %why, retry_in = ?after, "alert delivery will be retried");
                    }
                    Outcome::Retry(_, why) | Outcome::Refused(why) => {
                        doc.deliveries.remove(pos);
                        self.metrics.failed.add(1);
                        tracing::error!(notifier = %n.name, rule = %d.rule, reason = %why, "alert delivery failed; dropped");
                    }
                }
            }
            self.save();
        }
    }
}
