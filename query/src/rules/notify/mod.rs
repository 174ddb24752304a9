//! Notifiers: where alerts go (Slack incoming webhooks, generic JSON
//! webhooks), the messages for each, and reliable delivery.

pub mod delivery;
pub mod slack;
pub mod webhook;

use std::fmt;

/// A webhook URL: never printed, logged or serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: String) -> Result<SecretUrl, String> {
        let url = url.trim().to_string();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err("the webhook URL must start with https:// or http://".into());
        }
        Ok(SecretUrl(url))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretUrl(***)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifierKind {
    Slack,
    Webhook,
}

/// A configured notifier.
#[derive(Debug, Clone)]
pub struct Notifier {
    pub name: String,
    pub kind: NotifierKind,
    pub url: SecretUrl,
}

/// What the messages link to and say.
#[derive(Debug, Clone, Default)]
pub struct MessageContext {
    /// Grafana's base URL, for a link to the faasight dashboards.
    pub grafana_url: Option<String>,
}

/// The most alerts one message lists before "and N more".
pub const GROUP_CAP: usize = 10;
