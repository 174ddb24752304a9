//! The scheduler: each rule runs at its interval (first at start), within
//! a timeout; its rows become alert subjects; the state changes are
//! announced, grouped per rule and status, to the rule's notifiers. A
//! failing rule is logged and counted and does not stop the others.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::RuleMetrics;
use super::condition::Value;
use super::load::{Rule, SAVINGS, VALUE};
use super::notify::delivery::Deliverer;
use super::notify::{MessageContext, Notifier, NotifierKind, slack, webhook};
use super::state::{Alert, AlertState, Observation, StateStore, Status, Transition};
use crate::engine::QueryEngine;

/// Subjects one evaluation of a rule may produce.
pub const MAX_SUBJECTS: usize = 1_000;

#[derive(Debug)]
pub struct RulesArgs {
    pub engine: QueryEngine,
    pub rules: Vec<Rule>,
    pub notifiers: Vec<Notifier>,
    pub data_dir: std::path::PathBuf,
    pub context: MessageContext,
}

/// The running rules engine (cheap to clone; the API reads alerts from it).
#[derive(Debug, Clone)]
pub struct Rules {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: QueryEngine,
    rules: Vec<Rule>,
    notifiers: Vec<Notifier>,
    context: MessageContext,
    deliverer: Arc<Deliverer>,
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// One result row as name → value.
fn rows(batches: &[RecordBatch]) -> Vec<BTreeMap<String, Value>> {
    let mut out = Vec::new();
    for b in batches {
        let schema = b.schema();
        let mut cols: Vec<(String, Vec<Value>)> = Vec::new();
        for (field, col) in schema.fields().iter().zip(b.columns()) {
            let values: Vec<Value> = if field.data_type().is_numeric() {
                match cast(col, &DataType::Float64) {
                    Ok(a) => a
                        .as_primitive::<arrow::datatypes::Float64Type>()
                        .iter()
                        .map(|v| v.map_or(Value::Null, Value::Number))
                        .collect(),
                    Err(_) => vec![Value::Null; b.num_rows()],
                }
            } else if field.data_type() == &DataType::Boolean {
                col.as_boolean()
                    .iter()
                    .map(|v| v.map_or(Value::Null, Value::Bool))
                    .collect()
            } else {
                match cast(col, &DataType::Utf8) {
                    Ok(a) => a
                        .as_string::<i32>()
                        .iter()
                        .map(|v| v.map_or(Value::Null, |s| Value::Text(s.to_string())))
                        .collect(),
                    Err(_) => vec![Value::Null; b.num_rows()],
                }
            };
            cols.push((field.name().clone(), values));
        }
        for i in 0..b.num_rows() {
            out.push(
                cols.iter()
                    .map(|(n, v)| (n.clone(), v[i].clone()))
                    .collect(),
            );
        }
    }
    out
}

fn label_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Text(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(_) => super::template::format_value(v, super::template::Filter::Plain),
    }
}

/// The subjects of one evaluation whose condition holds.
pub fn observations(rule: &Rule, rows: &[BTreeMap<String, Value>]) -> Vec<Observation> {
    let mut out = Vec::new();
    for row in rows.iter().take(MAX_SUBJECTS) {
        let get = |c: &str| row.get(c).cloned().unwrap_or(Value::Null);
        if let Some(cond) = &rule.condition
            && !cond.eval(&get)
        {
            continue;
        }
        let mut labels: BTreeMap<String, String> = row
            .iter()
            .filter(|(k, _)| {
                k.as_str() != VALUE && k.as_str() != SAVINGS && !rule.details.contains(k)
            })
            .map(|(k, v)| (k.clone(), label_text(v)))
            .collect();
        for (k, v) in &rule.labels {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let number = |c: &str| match get(c) {
            Value::Number(n) => Some(n),
            _ => None,
        };
        let key = format!(
            "{}|{}",
            rule.name,
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        out.push(Observation {
            key,
            labels,
            value: number(VALUE),
            savings_usd_month: number(SAVINGS),
            message: rule.message.render(&get),
        });
    }
    out
}

/// Runs a rule's query once and returns the subjects whose condition holds
/// (no state, no notifications: `faasight rules eval`).
pub async fn dry_run(engine: &QueryEngine, rule: &Rule) -> Result<Vec<Observation>, String> {
    let result = engine.execute(&rule.sql).await.map_err(|e| e.to_string())?;
    Ok(observations(rule, &rows(&result.batches)))
}

impl Rules {
    /// Loads the saved state (dropping alerts of rules that are gone).
    pub fn new(args: RulesArgs) -> std::io::Result<Rules> {
        let store = StateStore::new(&args.data_dir);
        let (mut doc, warning) = store.load()?;
        if let Some(w) = warning {
            tracing::error!("{w}");
        }
        let names: Vec<String> = args.rules.iter().map(|r| r.name.clone()).collect();
        doc.retain_rules(&names);
        let client = reqwest::Client::builder()
            .user_agent(concat!("faasight/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| std::io::Error::other(e.without_url()))?;
        let deliverer = Arc::new(Deliverer {
            doc: Arc::new(Mutex::new(doc)),
            store,
            metrics: Arc::new(RuleMetrics::default()),
            wake: Arc::new(Notify::new()),
            client,
            board: Arc::clone(args.engine.alert_board()),
        });
        deliverer.publish();
        Ok(Rules {
            inner: Arc::new(Inner {
                engine: args.engine,
                rules: args.rules,
                notifiers: args.notifiers,
                context: args.context,
                deliverer,
            }),
        })
    }

    pub fn metrics(&self) -> &RuleMetrics {
        &self.inner.deliverer.metrics
    }

    pub fn rule_count(&self) -> usize {
        self.inner.rules.len()
    }

    /// Active alerts, firing first, then by severity and age.
    pub fn alerts(&self) -> Vec<Alert> {
        let mut v: Vec<Alert> = self
            .inner
            .deliverer
            .doc
            .lock()
            .alerts
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            (b.state == AlertState::Firing)
                .cmp(&(a.state == AlertState::Firing))
                .then(b.severity.cmp(&a.severity))
                .then(a.since_us.cmp(&b.since_us))
        });
        v
    }

    /// Evaluates one rule now.
    pub async fn evaluate(&self, rule: &Rule) -> Result<usize, String> {
        let inner = &self.inner;
        inner.deliverer.metrics.evaluations.add(1);
        let timeout = inner.engine.limits().timeout;
        let timeout = timeout.min(rule.every.max(Duration::from_secs(10)));
        let result = tokio::time::timeout(timeout, inner.engine.execute(&rule.sql))
            .await
            .map_err(|_| format!("timed out after {timeout:?}"))?
            .map_err(|e| e.to_string())?;
        let rows = rows(&result.batches);
        let holding = observations(rule, &rows);
        let count = holding.len();
        let now = now_us();
        {
            let mut doc = inner.deliverer.doc.lock();
            let transitions = doc.apply(rule, holding, now);
            for status in [Status::Firing, Status::Resolved] {
                let group: Vec<Transition> = transitions
                    .iter()
                    .filter(|t| t.status == status)
                    .cloned()
                    .collect();
                if group.is_empty() {
                    continue;
                }
                for name in &rule.notify {
                    let Some(n) = inner.notifiers.iter().find(|n| &n.name == name) else {
                        continue;
                    };
                    let body = match n.kind {
                        NotifierKind::Slack => {
                            slack::message(&rule.name, status, &group, &inner.context)
                        }
                        NotifierKind::Webhook => webhook::message(
                            &n.name,
                            &rule.name,
                            status,
                            &group,
                            &inner.context,
                            now,
                        ),
                    };
                    doc.enqueue(&n.name, &rule.name, status, body, now);
                }
                tracing::info!(rule = %rule.name, status = status.as_str(), alerts = group.len(), "alert state changed");
            }
        }
        inner.deliverer.save();
        inner.deliverer.wake.notify_waiters();
        Ok(count)
    }

    /// Runs every rule at its interval and every notifier's delivery until `stop`.
    pub async fn run<F, Fut>(self, stop: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut tasks = Vec::new();
        for n in &self.inner.notifiers {
            tasks.push(tokio::spawn(
                Arc::clone(&self.inner.deliverer).run(n.clone(), stop()),
            ));
        }
        for (i, rule) in self.inner.rules.iter().enumerate() {
            let me = self.clone();
            let every = rule.every;
            let stopped = stop();
            tasks.push(tokio::spawn(async move {
                tokio::pin!(stopped);
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        _ = tick.tick() => {}
                    }
                    let rule = &me.inner.rules[i];
                    if let Err(e) = me.evaluate(rule).await {
                        me.inner.deliverer.metrics.evaluation_failures.add(1);
                        tracing::warn!(rule = %rule.name, error = %e, "rule evaluation failed");
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Resolves notifier URLs from the environment or files (the URL itself is
/// never in the config file, logs or errors).
pub fn resolve_url(
    name: &str,
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<super::notify::SecretUrl, String> {
    let raw = match (env, file) {
        (Some(var), None) => std::env::var(var)
            .map_err(|_| format!("notifier {name}: environment variable {var} is not set"))?,
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
            format!(
                "notifier {name}: cannot read {}: {}",
                path.display(),
                e.kind()
            )
        })?,
        _ => {
            return Err(format!(
                "notifier {name}: set exactly one of webhook_url_env and webhook_url_file"
            ));
        }
    };
    super::notify::SecretUrl::new(raw).map_err(|e| format!("notifier {name}: {e}"))
}
