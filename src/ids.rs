//! Identifiers: accounts, campaigns, and the delivery id sent as `webhook-id`.

use std::fmt;

use crate::error::{Error, Result};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps the dialer's own identifier.
            pub fn new(id: impl Into<String>) -> Self {
                $name(id.into())
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                $name(id.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                $name(id)
            }
        }
    };
}

string_id!(
    /// A customer account of the dialer: the unit that owns webhook preferences.
    AccountId
);
string_id!(
    /// A campaign within an account: the unit of the per-campaign "Enable WebHook" switch.
    CampaignId
);

/// The id of one delivery, sent as `webhook-id` on every attempt so a receiver can drop
/// duplicates.
///
/// Generated ids look like `msg_01J9Z3K7Q8X4N2M5P6R7S8T9VW`: a 48-bit millisecond time and 80
/// random bits in Crockford base32, so they sort by creation time.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct DeliveryId(String);

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

impl DeliveryId {
    /// The longest id accepted from a caller.
    pub const MAX_LEN: usize = 128;

    /// A fresh, unique, time-ordered id.
    pub fn generate() -> Self {
        let millis = jiff::Timestamp::now().as_millisecond().max(0) as u128;
        let mut random = [0u8; 10];
        // The OS random source failing is not recoverable in any useful way.
        getrandom::fill(&mut random).expect("OS random source unavailable");
        let mut bits = millis << 80;
        for (i, b) in random.iter().enumerate() {
            bits |= (*b as u128) << (8 * (9 - i));
        }
        let mut id = String::with_capacity(30);
        id.push_str("msg_");
        for i in (0..26).rev() {
            id.push(CROCKFORD[((bits >> (5 * i)) & 31) as usize] as char);
        }
        DeliveryId(id)
    }

    /// An id chosen by the caller: 1 to 128 characters of `A-Z a-z 0-9 _ -`, so it is always a
    /// safe header value and a safe signature input (a `.` would make the Standard Webhooks
    /// signed text `id.timestamp.body` ambiguous).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for an empty id, one over 128 characters, or one with any other
    /// character.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= Self::MAX_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if ok {
            Ok(DeliveryId(id))
        } else {
            Err(Error::config(
                "delivery_id",
                "must be 1 to 128 characters of A-Z, a-z, 0-9, '_', '-'",
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for DeliveryId {
    type Error = Error;
    fn try_from(id: String) -> Result<Self> {
        DeliveryId::new(id)
    }
}

impl From<DeliveryId> for String {
    fn from(id: DeliveryId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_valid_and_time_ordered() {
        let a = DeliveryId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = DeliveryId::generate();
        assert_ne!(a, b);
        assert!(a < b, "{a} < {b}");
        assert_eq!(a.as_str().len(), 30);
        assert!(DeliveryId::new(a.as_str()).is_ok());
        let many: std::collections::HashSet<_> =
            (0..1000).map(|_| DeliveryId::generate()).collect();
        assert_eq!(many.len(), 1000);
    }

    #[test]
    fn caller_ids_are_checked() {
        assert!(DeliveryId::new("order-123_a-B9").is_ok());
        for bad in ["", "a b", "a\r\nb", "é", "call.42", &"x".repeat(129)] {
            assert!(DeliveryId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn string_ids_convert() {
        let a: AccountId = "acme".into();
        assert_eq!(a.to_string(), "acme");
        assert_eq!(CampaignId::new("winter").as_str(), "winter");
    }
}
