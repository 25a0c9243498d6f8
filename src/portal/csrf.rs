//! The portal's key, and what is derived from it: each session's CSRF token and the digest of
//! the settings a form was rendered from. Both are HMAC-SHA256 under the key, so neither can
//! be made without it, and a digest tells nothing of the secrets it covers.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::PortalUser;
use crate::error::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// The shortest key accepted.
const MIN_KEY_BYTES: usize = 32;

/// The portal's secret key.
pub(super) struct Key(Zeroizing<Vec<u8>>);

impl Key {
    /// 32 random bytes.
    pub(super) fn random() -> Result<Key> {
        let mut bytes = Zeroizing::new(vec![0u8; MIN_KEY_BYTES]);
        getrandom::fill(&mut bytes)
            .map_err(|_| Error::config("portal_key", "the system's random source failed"))?;
        Ok(Key(bytes))
    }

    /// The dialer's own key (checked by [`check`](Self::check)).
    pub(super) fn from_bytes(bytes: &[u8]) -> Key {
        Key(Zeroizing::new(bytes.to_vec()))
    }

    /// Refuses a key too short to resist guessing.
    pub(super) fn check(&self) -> Result<()> {
        if self.0.len() < MIN_KEY_BYTES {
            return Err(Error::config(
                "portal_key",
                format!("must be at least {MIN_KEY_BYTES} bytes"),
            ));
        }
        Ok(())
    }

    /// An HMAC under the key of `parts`, each length-prefixed so no two lists of parts meet.
    fn mac(&self, purpose: &str, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        for part in std::iter::once(purpose.as_bytes()).chain(parts.iter().copied()) {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// The CSRF token of `user`'s session: the same on every page of the session, another in
    /// every other session, account or principal.
    pub(super) fn csrf_token(&self, user: &PortalUser) -> String {
        let admin: &[u8] = if user.principal.is_administrator() {
            b"1"
        } else {
            b"0"
        };
        URL_SAFE_NO_PAD.encode(self.mac(
            "call-result-webhook portal csrf v1",
            &[
                user.session.as_bytes(),
                user.account.as_str().as_bytes(),
                user.principal.name().as_bytes(),
                admin,
            ],
        ))
    }

    /// Whether `given` is `user`'s CSRF token, compared in constant time.
    pub(super) fn csrf_matches(&self, user: &PortalUser, given: &str) -> bool {
        let expected = self.csrf_token(user);
        expected.as_bytes().ct_eq(given.as_bytes()).into()
    }

    /// The digest of an account's settings as described by `parts` (what a form shows and the
    /// secrets it does not).
    pub(super) fn digest(&self, parts: &[&[u8]]) -> String {
        URL_SAFE_NO_PAD.encode(self.mac("call-result-webhook portal settings v1", parts))
    }

    /// Whether `given` is `expected`, in constant time.
    pub(super) fn same(expected: &str, given: &str) -> bool {
        expected.as_bytes().ct_eq(given.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::Principal;

    fn user(session: &str, admin: bool) -> PortalUser {
        let principal = if admin {
            Principal::administrator("alice")
        } else {
            Principal::user("alice")
        };
        PortalUser::new(principal, "acme", session)
    }

    #[test]
    fn tokens_differ_by_session_and_role_and_match_only_themselves() {
        let key = Key::from_bytes(&[7; 32]);
        let a = key.csrf_token(&user("s1", true));
        assert_eq!(a, key.csrf_token(&user("s1", true)));
        assert_ne!(a, key.csrf_token(&user("s2", true)));
        assert_ne!(a, key.csrf_token(&user("s1", false)));
        assert!(key.csrf_matches(&user("s1", true), &a));
        assert!(!key.csrf_matches(&user("s2", true), &a));
        assert!(!key.csrf_matches(&user("s1", true), ""));
        let other = Key::from_bytes(&[8; 32]);
        assert!(!other.csrf_matches(&user("s1", true), &a));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(Key::from_bytes(&[1; 31]).check().is_err());
        assert!(Key::from_bytes(&[1; 32]).check().is_ok());
        assert!(Key::random().unwrap().check().is_ok());
    }
}
