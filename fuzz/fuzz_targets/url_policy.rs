//! Arbitrary text as a webhook URL, through `url::Url::parse` and `WebhookUrl::parse`, then
//! `UrlPolicy::check_url` under the default policy and with `allow_http(true)`.
//!
//! Checks: nothing panics; an accepted URL is http(s), has no userinfo, is within the length
//! cap, and its host is not an address the independent oracle refuses (an IP host, or a name a
//! C resolver would read as an IPv4 address); an `AddressRefused` names the URL's own host and
//! address; no error repeats the URL's password or user name.
#![no_main]

use std::net::IpAddr;

use call_result_webhook::{Error, UrlPolicy, preferences::WebhookUrl};
use libfuzzer_sys::fuzz_target;
use url::{Host, Url};

/// Stands in for the password in the comparison run; no fuzz input is likely to contain it.
const MARKER: &str = "MARKER-9f3c2e7a-pw";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let policies = [
        ("default", UrlPolicy::default()),
        ("allow_http", UrlPolicy::default().allow_http(true)),
    ];

    if let Ok(url) = Url::parse(&text) {
        for (name, policy) in &policies {
            check(name, policy, &url);
        }
    }

    match WebhookUrl::parse(&text) {
        Ok(webhook) => {
            let url = webhook.as_url();
            assert!(matches!(url.scheme(), "http" | "https"), "{url}");
            assert!(url.host().is_some(), "{url}");
            assert!(
                url.username().is_empty() && url.password().is_none(),
                "{url}"
            );
            assert!(url.fragment().is_none(), "{url}");
            assert_eq!(webhook.host_str(), url.host_str().unwrap_or_default());
            // Debug leaves the query out (it may carry a token): another query, same Debug.
            if url.query().is_some() {
                let mut other = url.clone();
                other.set_query(Some("q"));
                if let Ok(other) = WebhookUrl::parse(other.as_str())
                    && other.as_url().path() == url.path()
                    && other.host_str() == webhook.host_str()
                {
                    assert_eq!(
                        format!("{other:?}"),
                        format!("{webhook:?}"),
                        "Debug shows the query"
                    );
                }
            }
            for (name, policy) in &policies {
                check(name, policy, url);
            }
        }
        Err(err) => {
            // The parse error must not repeat a password the text carried.
            if let Ok(url) = Url::parse(text.trim()) {
                no_userinfo_in(&err, &url, |u| WebhookUrl::parse(u.as_str()).err());
            }
        }
    }
});

/// Runs `check_url` and checks its verdict against the URL's parts and the oracle.
fn check(policy_name: &str, policy: &UrlPolicy, url: &Url) {
    let verdict = policy.check_url(url);
    let ctx = format!("[{policy_name}] {url}");
    match &verdict {
        Ok(()) => {
            match url.scheme() {
                "https" => {}
                "http" => assert!(!policy.https_required(), "{ctx}: http accepted"),
                other => panic!("{ctx}: scheme {other} accepted"),
            }
            assert!(url.username().is_empty(), "{ctx}: user name accepted");
            assert!(url.password().is_none(), "{ctx}: password accepted");
            assert!(url.as_str().len() <= 2048, "{ctx}: over-long URL accepted");
            match url.host() {
                None => panic!("{ctx}: URL without host accepted"),
                Some(Host::Ipv4(v4)) => assert_addr_ok(&ctx, policy, IpAddr::V4(v4)),
                Some(Host::Ipv6(v6)) => assert_addr_ok(&ctx, policy, IpAddr::V6(v6)),
                Some(Host::Domain(name)) => {
                    assert!(!name.is_empty(), "{ctx}: empty host accepted");
                    let bare = name.strip_suffix('.').unwrap_or(name);
                    let bare = bare
                        .strip_prefix('[')
                        .and_then(|b| b.strip_suffix(']'))
                        .unwrap_or(bare);
                    if let Ok(addr) = bare.parse::<IpAddr>() {
                        assert_addr_ok(&ctx, policy, addr);
                    }
                    if let Some(v4) = fuzz_oracle::inet_aton(name) {
                        assert_addr_ok(&ctx, policy, IpAddr::V4(v4));
                    }
                }
            }
        }
        Err(Error::AddressRefused { host, addr, rule }) => {
            assert!(!rule.is_empty());
            assert_eq!(
                Some(host.as_str()),
                url.host_str(),
                "{ctx}: wrong host named"
            );
            let expected = match url.host() {
                Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
                Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
                _ => None,
            };
            if let Some(expected) = expected {
                assert_eq!(*addr, expected, "{ctx}: wrong address named");
            }
            assert!(
                fuzz_oracle::refused(*addr),
                "{ctx}: {addr} refused ({rule}) but the oracle admits it"
            );
        }
        Err(Error::InvalidUrl { .. }) => {}
        Err(other) => panic!("{ctx}: unexpected error kind {other:?}"),
    }
    if let Err(err) = &verdict {
        no_userinfo_in(err, url, |u| policy.check_url(u).err());
    }
}

/// The oracle must agree that `addr` may be used, and `check_addr` must say so too.
fn assert_addr_ok(ctx: &str, policy: &UrlPolicy, addr: IpAddr) {
    assert!(
        !fuzz_oracle::refused(addr),
        "{ctx}: host {addr} accepted but it is in a refused range"
    );
    assert!(
        policy.check_addr("h", addr).is_ok(),
        "{ctx}: check_url accepted {addr} but check_addr refuses it"
    );
}

/// `err` must not show the URL's password or user name, unless the same text shows up in the
/// error for the same URL with them replaced (then it came from elsewhere, such as the scheme).
fn no_userinfo_in(err: &Error, url: &Url, rerun: impl Fn(&Url) -> Option<Error>) {
    let shown = |e: &Error| [e.to_string(), format!("{e:?}")];
    let mut secrets: Vec<String> = Vec::new();
    if let Some(pw) = url.password() {
        secrets.push(pw.to_owned());
        if let Ok(decoded) = percent_decode(pw) {
            secrets.push(decoded);
        }
    }
    if !url.username().is_empty() {
        secrets.push(url.username().to_owned());
    }
    secrets.retain(|s| !s.is_empty());
    if secrets.is_empty() {
        return;
    }
    let mut masked = url.clone();
    let _ = masked.set_password(Some(MARKER));
    let _ = masked.set_username("MARKER-user");
    let masked_shown = rerun(&masked).map(|e| shown(&e)).unwrap_or_default();
    for secret in &secrets {
        // Display against Display, Debug against Debug.
        for (text, masked_text) in shown(err).iter().zip(&masked_shown) {
            assert!(
                !text.contains(secret.as_str()) || masked_text.contains(secret.as_str()),
                "error repeats userinfo {secret:?}: {text}"
            );
        }
    }
}

fn percent_decode(s: &str) -> Result<String, std::str::Utf8Error> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
}
