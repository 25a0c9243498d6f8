//! Identifiers: accounts, campaigns, and the delivery id sent as `webhook-id`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::limits::MAX_ID_BYTES;

/// Why `id` cannot be an account or campaign id, if it cannot: the rules of
/// [`MAX_ID_BYTES`](crate::limits::MAX_ID_BYTES). The reason names the rule, never the id.
fn id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("must not be empty".into());
    }
    if id.len() > MAX_ID_BYTES {
        return Some(format!(
            "is {} bytes, over the cap of {MAX_ID_BYTES} bytes of UTF-8",
            id.len()
        ));
    }
    if let Some((at, c)) = id.char_indices().find(|(_, c)| c.is_control()) {
        return Some(format!(
            "contains the control character U+{:04X} at byte {at}",
            u32::from(c)
        ));
    }
    None
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        ///
        /// # Checked where it enters
        ///
        /// An id is 1 to [`MAX_ID_BYTES`](crate::limits::MAX_ID_BYTES) bytes of UTF-8 with no
        /// control character (no NUL, tab, line break, DEL or C1 control): whatever passes can
        /// be stored by every store and printed in a log line. [`parse`](Self::parse) (and
        /// [`str::parse`], and deserializing with serde) checks when the id is made;
        /// [`new`](Self::new) and the `From` conversions do not, and every
        /// [`Webhooks`](crate::Webhooks) method an id is passed to checks it before anything
        /// is read or stored, answering [`Error::InvalidId`].
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The name [`Error::InvalidId`] gives this kind of id.
            pub const FIELD: &'static str = $field;

            /// Wraps the dialer's own identifier, unchecked (an id read back from a store, a
            /// constant): [`parse`](Self::parse) checks it now, and every
            /// [`Webhooks`](crate::Webhooks) method checks it when it is passed.
            pub fn new(id: impl Into<String>) -> Self {
                $name(id.into())
            }

            /// Wraps an identifier from outside (a request, a file), checked now.
            ///
            /// # Errors
            ///
            /// [`Error::InvalidId`] for an empty id, one over
            /// [`MAX_ID_BYTES`](crate::limits::MAX_ID_BYTES) bytes, or one with a control
            /// character. The error names the field, never the id.
            pub fn parse(id: impl Into<String>) -> Result<Self> {
                let id = $name(id.into());
                id.check()?;
                Ok(id)
            }

            /// Whether this id may be stored, as [`parse`](Self::parse) decides.
            ///
            /// # Errors
            ///
            /// As [`parse`](Self::parse).
            pub fn check(&self) -> Result<()> {
                match id_problem(&self.0) {
                    None => Ok(()),
                    Some(reason) => Err(Error::InvalidId {
                        field: $field,
                        reason,
                    }),
                }
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

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(id: &str) -> Result<Self> {
                $name::parse(id)
            }
        }

        /// Checked as [`parse`](Self::parse) checks.
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let id = String::deserialize(d)?;
                $name::parse(id).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A customer account of the dialer: the unit that owns webhook preferences.
    AccountId,
    "account_id"
);
string_id!(
    /// A campaign within an account: the unit of the per-campaign "Enable WebHook" switch.
    CampaignId,
    "campaign_id"
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
    fn account_and_campaign_ids_are_checked() {
        // The longest accepted: 255 bytes, multi-byte characters included.
        let longest = format!("{}a", "é".repeat(127));
        assert_eq!(longest.len(), MAX_ID_BYTES);
        let mut ok = vec![
            "acme".to_owned(),
            "a".to_owned(),
            "winter sale 2026 ✓".to_owned(),
            longest.clone(),
            "x".repeat(MAX_ID_BYTES),
        ];
        ok.push("日本語のキャンペーン".to_owned());
        for id in &ok {
            assert!(AccountId::parse(id.as_str()).is_ok(), "{id:?}");
            assert!(CampaignId::parse(id.as_str()).is_ok(), "{id:?}");
            assert!(AccountId::new(id.as_str()).check().is_ok());
        }
        let over = format!("{longest}a");
        for bad in [
            "",
            "\0",
            "acme\0",
            "a\tb",
            "a\nb",
            "a\r",
            "\u{7f}",
            "\u{85}",
            "\u{9f}x",
            over.as_str(),
            &"x".repeat(9000),
        ] {
            match AccountId::parse(bad) {
                Err(Error::InvalidId { field, reason }) => {
                    assert_eq!(field, "account_id");
                    assert!(!bad.is_empty() || reason.contains("empty"), "{reason}");
                    if bad.len() > 3 {
                        assert!(!reason.contains(bad), "the reason repeats the id: {reason}");
                    }
                }
                other => panic!("{bad:?}: {other:?}"),
            }
            match bad.parse::<CampaignId>() {
                Err(Error::InvalidId { field, .. }) => assert_eq!(field, "campaign_id"),
                other => panic!("{bad:?}: {other:?}"),
            }
            assert!(CampaignId::from(bad).check().is_err());
        }
        let err = AccountId::parse("ab\0c").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid account_id: contains the control character U+0000 at byte 2"
        );
        let err = CampaignId::parse("x".repeat(256)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid campaign_id: is 256 bytes, over the cap of 255 bytes of UTF-8"
        );
    }

    #[test]
    fn deserialized_ids_are_checked_and_serialize_as_text() {
        let ok: AccountId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(ok.as_str(), "acme");
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"acme\"");
        for bad in ["\"\"", "\"a\\u0000b\"", "\"a\\nb\""] {
            let err = serde_json::from_str::<CampaignId>(bad).unwrap_err();
            assert!(err.to_string().contains("invalid campaign_id"), "{err}");
            assert!(serde_json::from_str::<AccountId>(bad).is_err());
        }
    }

    #[test]
    fn stored_accounts_keep_ids_stored_before_the_check() {
        // An account stored by an older release, with ids the check now refuses, still loads.
        let admin = crate::preferences::Principal::administrator("alice");
        let mut account = crate::account::Account::new("");
        account
            .set_campaign_webhook(&admin, CampaignId::new("tab\there"), true)
            .unwrap();
        let back = crate::account::Account::from_storage_json(&account.to_storage_json()).unwrap();
        assert_eq!(back.id().as_str(), "");
        assert!(back.campaign_webhook_enabled(&CampaignId::new("tab\there")));
    }

    #[test]
    fn string_ids_convert() {
        let a: AccountId = "acme".into();
        assert_eq!(a.to_string(), "acme");
        assert_eq!(CampaignId::new("winter").as_str(), "winter");
    }
}
