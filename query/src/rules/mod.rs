//! Rules and alerts: SQL rules evaluated on a schedule, an alert lifecycle
//! persisted in the data directory, and notifications delivered reliably.
//!
//! ```text
//! load (rules/*.yaml → Rule, checked against the schema)
//!   → evaluate (per rule, every `every`: SQL → rows → condition → subjects)
//!   → state (pending → firing → resolved; persisted) → notify (Slack Block
//!   Kit / JSON webhook messages, queued, delivered with retries)
//! ```

pub mod condition;
pub mod evaluate;
pub mod load;
pub mod notify;
pub mod state;
pub mod template;

#[cfg(test)]
mod tests;

use faasight_collector::telemetry::{Counter, render_counter};

pub use evaluate::{Rules, RulesArgs};

/// Rule and delivery counters for `/metrics`.
#[derive(Debug, Default)]
pub struct RuleMetrics {
    pub evaluations: Counter,
    pub evaluation_failures: Counter,
    pub sent: Counter,
    pub retries: Counter,
    pub failed: Counter,
}

impl RuleMetrics {
    pub fn render(&self, out: &mut String, firing: u64) {
        render_counter(
            out,
            "faasight_rule_evaluations_total",
            "Rule evaluations",
            &[("", self.evaluations.get())],
        );
        render_counter(
            out,
            "faasight_rule_evaluation_failures_total",
            "Rule evaluations that failed (SQL error or timeout)",
            &[("", self.evaluation_failures.get())],
        );
        render_counter(
            out,
            "faasight_alerts_sent_total",
            "Alert notifications delivered",
            &[("", self.sent.get())],
        );
        render_counter(
            out,
            "faasight_alert_delivery_retries_total",
            "Alert deliveries retried (429, 5xx, network)",
            &[("", self.retries.get())],
        );
        render_counter(
            out,
            "faasight_alerts_failed_total",
            "Alert notifications given up (refused by the webhook or undeliverable for 24 h)",
            &[("", self.failed.get())],
        );
        out.push_str("# HELP faasight_alerts_firing Alerts firing now\n# TYPE faasight_alerts_firing gauge\n");
        out.push_str(&format!("faasight_alerts_firing {firing}\n"));
    }
}
