//! The generic JSON webhook: an Alertmanager-style payload.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{GROUP_CAP, MessageContext};
use crate::rules::state::{Status, Transition};

fn time(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn message(
    receiver: &str,
    rule: &str,
    status: Status,
    alerts: &[Transition],
    ctx: &MessageContext,
    now_us: i64,
) -> Value {
    let items: Vec<Value> = alerts
        .iter()
        .take(GROUP_CAP * 10)
        .map(|t| {
            let a = &t.alert;
            let mut labels = a.labels.clone();
            labels.insert("alertname".into(), rule.to_string());
            labels.insert("severity".into(), a.severity.as_str().to_string());
            json!({
                "status": status.as_str(),
                "labels": labels,
                "annotations": { "summary": a.message, "description": a.description },
                "values": { "value": a.value, "savings_usd_month": a.savings_usd_month },
                "startsAt": time(a.firing_since_us.unwrap_or(a.since_us)),
                "endsAt": if status == Status::Resolved { time(now_us) } else { "0001-01-01T00:00:00Z".to_string() },
                "generatorURL": ctx.grafana_url,
            })
        })
        .collect();
    json!({
        "version": "4",
        "receiver": receiver,
        "status": status.as_str(),
        "groupLabels": { "alertname": rule },
        "commonLabels": { "alertname": rule },
        "truncatedAlerts": alerts.len().saturating_sub(items.len()),
        "alerts": items,
    })
}
