//! Slack incoming-webhook messages (Block Kit): a header with severity and
//! rule, one section per alert (the message, the function, the figure, the
//! savings), the rule's description (what to do), and a Grafana link.

use serde_json::{Value, json};

use super::{GROUP_CAP, MessageContext};
use crate::rules::state::{Status, Transition};
use crate::rules::template::dollars;

/// Slack's limits on text fields.
const HEADER_MAX: usize = 150;
const SECTION_MAX: usize = 3000;

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// One message for the alerts of one rule that changed together.
pub fn message(rule: &str, status: Status, alerts: &[Transition], ctx: &MessageContext) -> Value {
    let Some(first) = alerts.first() else {
        return json!({ "text": format!("{rule}: nothing to report") });
    };
    let severity = first.alert.severity.as_str().to_uppercase();
    let (icon, state) = match status {
        Status::Firing => (
            match first.alert.severity {
                crate::rules::load::Severity::Critical => "🔴",
                crate::rules::load::Severity::Warning => "🟠",
                crate::rules::load::Severity::Info => "🔵",
            },
            severity.as_str(),
        ),
        Status::Resolved => ("✅", "RESOLVED"),
    };
    let header = cut(
        &format!("{icon} {state} · {rule} ({})", alerts.len()),
        HEADER_MAX,
    );
    let mut blocks = vec![json!({
        "type": "header",
        "text": { "type": "plain_text", "text": header, "emoji": true },
    })];
    for t in alerts.iter().take(GROUP_CAP) {
        let a = &t.alert;
        let mut text = a.message.clone();
        if status == Status::Resolved {
            text = format!("Resolved: {text}");
        }
        let mut fields = Vec::new();
        if let Some(f) = a.labels.get("function_name") {
            fields
                .push(json!({ "type": "mrkdwn", "text": format!("*Function*\n{}", cut(f, 200)) }));
        }
        if let Some(v) = a.value {
            fields.push(json!({ "type": "mrkdwn", "text": format!("*Value*\n{}", crate::rules::template::format_value(&crate::rules::condition::Value::Number(v), crate::rules::template::Filter::Plain)) }));
        }
        if let Some(s) = a.savings_usd_month.filter(|s| *s > 0.0) {
            fields.push(
                json!({ "type": "mrkdwn", "text": format!("*Savings*\n{} / month", dollars(s)) }),
            );
        }
        let mut section = json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": cut(&text, SECTION_MAX) },
        });
        if !fields.is_empty() {
            section["fields"] = Value::Array(fields);
        }
        blocks.push(section);
    }
    if alerts.len() > GROUP_CAP {
        blocks.push(json!({
            "type": "context",
            "elements": [{ "type": "mrkdwn", "text": format!("…and {} more", alerts.len() - GROUP_CAP) }],
        }));
    }
    if !first.alert.description.is_empty() && status == Status::Firing {
        blocks.push(json!({
            "type": "context",
            "elements": [{ "type": "mrkdwn", "text": cut(&format!("*What to do:* {}", first.alert.description), SECTION_MAX) }],
        }));
    }
    if let Some(url) = &ctx.grafana_url {
        let link = format!("{}/d/faasight-overview", url.trim_end_matches('/'));
        blocks.push(json!({
            "type": "actions",
            "elements": [{
                "type": "button",
                "text": { "type": "plain_text", "text": "Open in Grafana" },
                "url": link,
            }],
        }));
    }
    let total: f64 = alerts
        .iter()
        .filter_map(|t| t.alert.savings_usd_month)
        .sum();
    let fallback = match status {
        Status::Firing if total > 0.0 => format!(
            "[{state}] {rule}: {} alert(s), {} / month to save",
            alerts.len(),
            dollars(total)
        ),
        Status::Firing => format!("[{state}] {rule}: {} alert(s)", alerts.len()),
        Status::Resolved => format!("[RESOLVED] {rule}: {} alert(s)", alerts.len()),
    };
    json!({ "text": fallback, "blocks": blocks })
}
