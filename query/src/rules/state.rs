//! Alert state and its lifecycle, persisted in the data directory.
//!
//! On disk: `DATA_DIR/alerts/state.json`, one JSON document with the active
//! alerts (pending or firing) and the deliveries not yet done. It is
//! replaced atomically (write a temporary file, fsync, rename, fsync the
//! directory) after every evaluation and every delivery outcome, so after a
//! crash or restart an alert that already fired is not announced again and
//! a message that was due (firing or resolved) is still sent.
//!
//! Lifecycle per subject (rule + labels): inactive → pending (condition
//! true, `for` not yet elapsed) → firing (one notification) → resolved (one
//! notification, then gone). A pending subject whose condition turns false
//! goes back to inactive silently. A still-firing alert is announced again
//! every `repeat_interval`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::load::{Rule, Severity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Pending,
    Firing,
}

/// One alert subject's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub rule: String,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    pub state: AlertState,
    /// When the condition became true (µs).
    pub since_us: i64,
    pub firing_since_us: Option<i64>,
    pub last_notified_us: Option<i64>,
    pub value: Option<f64>,
    pub savings_usd_month: Option<f64>,
    pub message: String,
    pub description: String,
}

/// A subject as one evaluation saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub key: String,
    pub labels: BTreeMap<String, String>,
    pub value: Option<f64>,
    pub savings_usd_month: Option<f64>,
    pub message: String,
}

/// What an evaluation changed that must be announced.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub status: Status,
    pub alert: Alert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// A notification waiting to be delivered (rendered, ready to post).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: u64,
    pub notifier: String,
    pub rule: String,
    pub status: Status,
    pub body: serde_json::Value,
    pub created_us: i64,
    pub attempts: u32,
    pub next_attempt_us: i64,
}

/// Everything persisted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateDoc {
    /// Active alerts by subject key.
    pub alerts: BTreeMap<String, Alert>,
    pub deliveries: Vec<Delivery>,
    pub next_delivery_id: u64,
}

fn micros(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl StateDoc {
    /// Applies one evaluation of `rule` (the subjects whose condition held)
    /// at `now_us`; returns the transitions to announce.
    pub fn apply(
        &mut self,
        rule: &Rule,
        holding: Vec<Observation>,
        now_us: i64,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for obs in holding {
            seen.insert(obs.key.clone());
            let alert = self.alerts.entry(obs.key.clone()).or_insert_with(|| Alert {
                rule: rule.name.clone(),
                severity: rule.severity,
                labels: obs.labels.clone(),
                state: AlertState::Pending,
                since_us: now_us,
                firing_since_us: None,
                last_notified_us: None,
                value: obs.value,
                savings_usd_month: obs.savings_usd_month,
                message: obs.message.clone(),
                description: rule.description.clone(),
            });
            alert.value = obs.value;
            alert.savings_usd_month = obs.savings_usd_month;
            alert.message = obs.message;
            alert.labels = obs.labels;
            alert.severity = rule.severity;
            alert.description = rule.description.clone();
            match alert.state {
                AlertState::Pending if now_us - alert.since_us >= micros(rule.for_) => {
                    alert.state = AlertState::Firing;
                    alert.firing_since_us = Some(now_us);
                    alert.last_notified_us = Some(now_us);
                    out.push(Transition {
                        status: Status::Firing,
                        alert: alert.clone(),
                    });
                }
                AlertState::Firing
                    if alert
                        .last_notified_us
                        .is_none_or(|t| now_us - t >= micros(rule.repeat_interval)) =>
                {
                    alert.last_notified_us = Some(now_us);
                    out.push(Transition {
                        status: Status::Firing,
                        alert: alert.clone(),
                    });
                }
                _ => {}
            }
        }
        let gone: Vec<String> = self
            .alerts
            .iter()
            .filter(|(k, a)| a.rule == rule.name && !seen.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(a) = self.alerts.remove(&k)
                && a.state == AlertState::Firing
            {
                out.push(Transition {
                    status: Status::Resolved,
                    alert: a,
                });
            }
        }
        out
    }

    /// Drops the alerts of rules that no longer exist (without messages).
    pub fn retain_rules(&mut self, names: &[String]) {
        self.alerts.retain(|_, a| names.contains(&a.rule));
    }

    pub fn enqueue(
        &mut self,
        notifier: &str,
        rule: &str,
        status: Status,
        body: serde_json::Value,
        now_us: i64,
    ) {
        self.next_delivery_id += 1;
        self.deliveries.push(Delivery {
            id: self.next_delivery_id,
            notifier: notifier.to_string(),
            rule: rule.to_string(),
            status,
            body,
            created_us: now_us,
            attempts: 0,
            next_attempt_us: now_us,
        });
    }
}

/// Where the state lives.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
    /// Held while saving, shared by the store's clones: every rule
    /// evaluates (and saves) on its own task, and the saves share one
    /// temporary file.
    saving: Arc<Mutex<()>>,
}

impl StateStore {
    pub fn new(data_dir: &Path) -> Self {
        StateStore {
            dir: data_dir.join("alerts"),
            saving: Arc::default(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The saved state; empty when there is none. A damaged file is moved
    /// aside (`state.json.corrupt`) and reported, never silently dropped.
    pub fn load(&self) -> std::io::Result<(StateDoc, Option<String>)> {
        let path = self.path();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((StateDoc::default(), None));
            }
            Err(e) => return Err(e),
        };
        match serde_json::from_slice(&text) {
            Ok(doc) => Ok((doc, None)),
            Err(e) => {
                let aside = self.dir.join("state.json.corrupt");
                std::fs::rename(&path, &aside)?;
                Ok((
                    StateDoc::default(),
                    Some(format!(
                        "alert state was unreadable ({e}); moved to {}",
                        aside.display()
                    )),
                ))
            }
        }
    }

    /// Replaces the saved state atomically and durably, one save at a time
    /// (none renames another's half-written temporary file).
    pub fn save(&self, doc: &StateDoc) -> std::io::Result<()> {
        let _turn = self.saving.lock();
        self.write(doc)
    }

    /// [`Self::save`] of `doc` as it is when this save's turn comes, so the
    /// last one written holds the latest state, not an older copy.
    pub fn save_current(&self, doc: &Mutex<StateDoc>) -> std::io::Result<()> {
        let _turn = self.saving.lock();
        let current = doc.lock().clone();
        self.write(&current)
    }

    fn write(&self, doc: &StateDoc) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join("state.json.tmp");
        let bytes = serde_json::to_vec(doc).map_err(std::io::Error::other)?;
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.path())?;
        std::fs::File::open(&self.dir)?.sync_all()
    }
}
