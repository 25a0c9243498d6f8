//! Who may change what: a [`Principal`] is who asks, and only one with full administrative
//! permission may change webhook settings, replay or remove deliveries, or resume an endpoint.

use crate::error::{Error, Result};

/// Who is asking for a change. Only a principal with full administrative permission may change
/// webhook settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Principal {
    name: String,
    full_admin: bool,
}

impl Principal {
    /// A user with full administrative permission.
    pub fn administrator(name: impl Into<String>) -> Self {
        Principal {
            name: name.into(),
            full_admin: true,
        }
    }

    /// A user without full administrative permission (supervisor, agent, API key...).
    pub fn user(name: impl Into<String>) -> Self {
        Principal {
            name: name.into(),
            full_admin: false,
        }
    }

    /// The principal's name, as recorded in the audit log.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the principal has full administrative permission.
    pub fn is_administrator(&self) -> bool {
        self.full_admin
    }

    pub(crate) fn require_admin(&self, action: &'static str) -> Result<()> {
        if self.full_admin {
            Ok(())
        } else {
            Err(Error::PermissionDenied {
                principal: self.name.clone(),
                action,
            })
        }
    }
}
