//! The audit of a change to an account's settings: [`AuditRecord`] (who, when, which
//! fields, never a value), and which fields two preferences differ in.

use jiff::Timestamp;

use super::Preferences;

/// One change to an account's webhook settings, for audit: who, when, which fields. Never the
/// values, so never a password.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    /// Who made the change.
    pub principal: String,
    /// When it was made.
    pub at: Timestamp,
    /// What changed: preference field names, or `campaign:<id>` for a campaign switch.
    pub fields: Vec<String>,
}

impl Preferences {
    /// The names of the fields (as audited) in which `other` differs from `self`: for a
    /// change that replaces the preferences whole.
    pub(crate) fn changed_fields(&self, other: &Preferences) -> Vec<&'static str> {
        let fields = |p: &Preferences| match serde_json::to_value(p.to_stored()) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        let (before, after) = (fields(self), fields(other));
        STORED_FIELDS
            .iter()
            .filter(|(stored, _)| before.get(*stored) != after.get(*stored))
            .map(|(_, audited)| *audited)
            .collect()
    }
}

/// Each field of [`StoredPreferences`] and the name its change is audited under.
const STORED_FIELDS: &[(&str, &str)] = &[
    ("enabled", "enabled"),
    ("url", "url"),
    ("username", "username"),
    ("password", "password"),
    ("auth_scheme", "auth_scheme"),
    ("encoding", "encoding"),
    ("time_zone", "time_zone"),
    ("attempt_timeout_ms", "attempt_timeout"),
    ("retry_delays_ms", "retry_schedule"),
    ("signing_secrets", "signing_secret"),
    ("mask_phone", "mask_phone"),
    ("omit_result_notes", "omit_result_notes"),
    ("new_campaigns_enabled", "new_campaigns_enabled"),
    ("method", "method"),
    ("key_names", "key_names"),
    ("headers", "headers"),
    ("token", "token"),
    ("api_key_header", "api_key_header"),
];
