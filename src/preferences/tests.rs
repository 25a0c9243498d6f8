//! The preferences as a whole: updates, the stored form and the audit of a change.

use super::*;
use crate::error::{Error, Result};
use crate::limits::MAX_URL_LEN;

fn apply(p: &Preferences, u: PreferencesUpdate) -> Result<Preferences> {
    p.with_update(u).map(|(p, _)| p)
}

#[test]
fn url_rules() {
    assert!(WebhookUrl::parse("https://example.com/hook").is_ok());
    assert!(WebhookUrl::parse("http://example.com:8080/hook?x=1").is_ok());
    for bad in [
        "ftp://example.com/",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "https://",
        "not a url",
        "https://example.com/#frag",
    ] {
        assert!(
            matches!(WebhookUrl::parse(bad), Err(Error::InvalidUrl { .. })),
            "{bad}"
        );
    }
    let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
    assert!(WebhookUrl::parse(&long).is_err());
}

#[test]
fn userinfo_in_url_is_refused_without_echo() {
    let err = WebhookUrl::parse("https://admin:hunter2@example.com/").unwrap_err();
    assert!(!format!("{err} {err:?}").contains("hunter2"));
}

#[test]
fn debug_of_url_hides_query() {
    let u = WebhookUrl::parse("https://hooks.example.com/catch/123?token=abc").unwrap();
    let shown = format!("{u:?}");
    assert_eq!(shown, "https://hooks.example.com/catch/123?[redacted]");
}

#[test]
fn scheme_and_credentials_are_checked_together_in_any_order() {
    let p = Preferences::default();
    let u = PreferencesUpdate::new()
        .credentials("a:b", "pw")
        .auth_scheme(AuthScheme::Slash);
    assert!(apply(&p, u).is_ok());
    let u = PreferencesUpdate::new().credentials("a:b", "pw");
    assert!(matches!(
        apply(&p, u),
        Err(Error::InvalidConfig {
            field: "username",
            ..
        })
    ));
}

#[test]
fn first_error_is_kept_and_nothing_changes() {
    let p = Preferences::default();
    let u = PreferencesUpdate::new()
        .enabled(true)
        .time_zone("Mars/Olympus")
        .url("gopher://x");
    assert!(matches!(
        p.with_update(u),
        Err(Error::InvalidConfig {
            field: "time_zone",
            ..
        })
    ));
    assert!(!p.enabled());
}

#[test]
fn empty_credentials_mean_no_header() {
    let p = apply(
        &Preferences::default(),
        PreferencesUpdate::new().credentials("", ""),
    )
    .unwrap();
    assert!(p.authorization().is_none());
    assert!(!p.has_password());
}

#[test]
fn changed_fields_are_named_and_password_value_is_not() {
    let p = Preferences::default();
    let (p, changed) = p
        .with_update(
            PreferencesUpdate::new()
                .enabled(true)
                .credentials("u", "topsecret"),
        )
        .unwrap();
    assert_eq!(changed, ["enabled", "username", "password"]);
    let (_, changed) = p
        .with_update(PreferencesUpdate::new().credentials("u", "othersecret"))
        .unwrap();
    assert_eq!(changed, ["password"]);
}

#[test]
fn stored_round_trip_keeps_everything() {
    let (p, _) = Preferences::default()
        .with_update(
            PreferencesUpdate::new()
                .enabled(true)
                .url("https://example.com/h")
                .credentials("u", "pw")
                .auth_scheme(AuthScheme::Slash)
                .encoding(Encoding::Json)
                .time_zone("Australia/Perth")
                .attempt_timeout(Duration::from_secs(7))
                .retry_schedule(RetrySchedule::from_millis(&[50, 100, 200]).unwrap()),
        )
        .unwrap();
    let back = Preferences::from_stored(&p.to_stored()).unwrap();
    assert_eq!(format!("{p:?}"), format!("{back:?}"));
    assert_eq!(back.retry_schedule().to_millis(), [50, 100, 200]);
    assert_eq!(back.authorization(), p.authorization());
}

#[test]
fn attempt_timeout_bounds() {
    let p = Preferences::default();
    for bad in [Duration::from_millis(999), Duration::from_secs(31)] {
        assert!(apply(&p, PreferencesUpdate::new().attempt_timeout(bad)).is_err());
    }
    let ok = apply(
        &p,
        PreferencesUpdate::new().attempt_timeout(Duration::from_secs(30)),
    )
    .unwrap();
    assert_eq!(ok.attempt_timeout(), Duration::from_secs(30));
}

#[test]
fn preferences_stored_before_retry_schedules_still_load() {
    let old = r#"{"enabled":true,"url":"https://example.com/h","username":null,"password":null,
        "auth_scheme":"basic","encoding":"form","time_zone":"UTC","attempt_timeout_ms":15000}"#;
    let stored: StoredPreferences = serde_json::from_str(old).unwrap();
    let p = Preferences::from_stored(&stored).unwrap();
    assert_eq!(p.retry_schedule(), &RetrySchedule::default());
    // The default is not written, so the stored form stays what older readers know.
    let json = serde_json::to_string(&p.to_stored()).unwrap();
    assert!(!json.contains("retry_delays_ms"));
}

#[test]
fn retry_schedule_change_is_named() {
    let (_, changed) = Preferences::default()
        .with_update(
            PreferencesUpdate::new()
                .retry_schedule(RetrySchedule::new([Duration::from_secs(1)]).unwrap()),
        )
        .unwrap();
    assert_eq!(changed, ["retry_schedule"]);
}

#[test]
fn pii_options_are_off_by_default_named_in_the_audit_and_stored() {
    let p = Preferences::default();
    assert!(!p.mask_phone() && !p.omit_result_notes());
    let (p, changed) = p
        .with_update(
            PreferencesUpdate::new()
                .mask_phone(true)
                .omit_result_notes(true),
        )
        .unwrap();
    assert_eq!(changed, ["mask_phone", "omit_result_notes"]);
    let back = Preferences::from_stored(&p.to_stored()).unwrap();
    assert!(back.mask_phone() && back.omit_result_notes());
    let (_, unchanged) = back
        .with_update(PreferencesUpdate::new().mask_phone(true))
        .unwrap();
    assert!(unchanged.is_empty());
    // At their defaults they are not written: the stored form is what it was before.
    let json = serde_json::to_string(&Preferences::default().to_stored()).unwrap();
    assert!(!json.contains("mask_phone") && !json.contains("omit_result_notes"));
    assert!(!json.contains("signing_secrets"));
}

mod options {
    use super::*;
    use crate::limits::MAX_CUSTOM_HEADERS;

    fn header(p: &Preferences) -> Option<(&str, &str)> {
        p.auth_header()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
    }

    #[test]
    fn each_auth_kind_makes_its_header_and_needs_what_it_sends() {
        let p = apply(
            &Preferences::default(),
            PreferencesUpdate::new().credentials("user", "passwd"),
        )
        .unwrap();
        assert_eq!(
            header(&p),
            Some(("authorization", "Basic dXNlcjpwYXNzd2Q="))
        );

        let (none, changed) = p
            .with_update(PreferencesUpdate::new().auth_scheme(AuthScheme::None))
            .unwrap();
        assert_eq!(changed, ["auth_scheme"]);
        assert_eq!(header(&none), None);
        assert!(
            none.has_password(),
            "credentials are kept for a switch back"
        );

        let (bearer, changed) = none
            .with_update(PreferencesUpdate::new().bearer_token("t0k"))
            .unwrap();
        assert_eq!(changed, ["auth_scheme", "token"]);
        assert_eq!(header(&bearer), Some(("authorization", "Bearer t0k")));
        assert!(bearer.auth_header().unwrap().1.is_sensitive());

        let (key, changed) = bearer
            .with_update(PreferencesUpdate::new().api_key("X-Api-Key", "k3y"))
            .unwrap();
        assert_eq!(changed, ["auth_scheme", "token", "api_key_header"]);
        assert_eq!(header(&key), Some(("x-api-key", "k3y")));
        assert!(key.auth_header().unwrap().1.is_sensitive());
        assert_eq!(key.api_key_header(), Some("x-api-key"));

        // Switching schemes keeps what each needs.
        let back = apply(
            &key,
            PreferencesUpdate::new().auth_scheme(AuthScheme::Slash),
        )
        .unwrap();
        assert_eq!(header(&back), Some(("authorization", "dXNlci9wYXNzd2Q=")));

        // A scheme without what it sends is refused, and nothing changes.
        let fresh = Preferences::default();
        let err = apply(
            &fresh,
            PreferencesUpdate::new().auth_scheme(AuthScheme::Bearer),
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig { field: "token", .. }),
            "{err}"
        );
        let err = apply(
            &fresh,
            PreferencesUpdate::new().auth_scheme(AuthScheme::ApiKey),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidConfig {
                    field: "api_key",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_tokens_and_key_headers_are_refused_naming_the_field_or_header() {
        let p = Preferences::default();
        for (update, field) in [
            (PreferencesUpdate::new().bearer_token(""), "token"),
            (
                PreferencesUpdate::new().bearer_token("t\r\nX-Evil: SECRETVALUE"),
                "token",
            ),
            (
                PreferencesUpdate::new().api_key("X-Api-Key", "SECRETVALUE\n"),
                "api_key",
            ),
        ] {
            let err = apply(&p, update).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidConfig { field: f, .. } if *f == field),
                "{err}"
            );
            assert!(!format!("{err} {err:?}").contains("SECRETVALUE"));
        }
        for name in ["Authorization", "x api key", "", "Webhook-Id"] {
            let err = apply(&p, PreferencesUpdate::new().api_key(name, "SECRETVALUE")).unwrap_err();
            assert!(matches!(err, Error::InvalidHeader { .. }), "{name}: {err}");
            assert!(!format!("{err} {err:?}").contains("SECRETVALUE"));
        }
        let err = apply(
            &p,
            PreferencesUpdate::new()
                .header("X-Api-Key", "plain")
                .api_key("x-api-key", "SECRETVALUE"),
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidHeader { name, .. } if name == "x-api-key"),
            "{err}"
        );
    }

    #[test]
    fn custom_headers_are_set_replaced_removed_and_capped() {
        let (p, changed) = Preferences::default()
            .with_update(
                PreferencesUpdate::new()
                    .header("X-Tenant", "acme")
                    .secret_header("X-Shared", "s3cr3t")
                    .header("x-tenant", "acme-2"),
            )
            .unwrap();
        assert_eq!(changed, ["headers"]);
        let shown: Vec<_> = p.headers().iter().map(|h| (h.name(), h.value())).collect();
        assert_eq!(shown, [("x-tenant", Some("acme-2")), ("x-shared", None)]);
        assert!(!format!("{p:?}").contains("s3cr3t"));

        let (same, changed) = p
            .with_update(PreferencesUpdate::new().header("X-Tenant", "acme-2"))
            .unwrap();
        assert!(changed.is_empty());
        let removed = apply(&same, PreferencesUpdate::new().remove_header("X-TENANT")).unwrap();
        assert_eq!(removed.headers().len(), 1);
        let cleared = apply(&same, PreferencesUpdate::new().clear_headers()).unwrap();
        assert!(cleared.headers().is_empty());

        let mut full = PreferencesUpdate::new();
        for i in 0..MAX_CUSTOM_HEADERS {
            full = full.header(&format!("X-H{i}"), "v");
        }
        let p = apply(&Preferences::default(), full).unwrap();
        assert_eq!(p.headers().len(), MAX_CUSTOM_HEADERS);
        let err = apply(&p, PreferencesUpdate::new().header("X-One-Too-Many", "v")).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidConfig {
                    field: "headers",
                    ..
                }
            ),
            "{err}"
        );
        // Replacing one at the cap is fine.
        assert!(apply(&p, PreferencesUpdate::new().header("X-H0", "w")).is_ok());
    }

    #[test]
    fn key_names_are_checked_on_the_result() {
        let (p, changed) = Preferences::default()
            .with_update(
                PreferencesUpdate::new()
                    .key_name("PhoneCalled", "Reference")
                    .key_name("Reference", "PhoneCalled"),
            )
            .unwrap();
        assert_eq!(changed, ["key_names"]);
        assert_eq!(p.key_names().name("PhoneCalled"), Some("Reference"));
        // Kept across updates, and checked with the ones kept.
        let err = apply(
            &p,
            PreferencesUpdate::new().key_name("Result", "PhoneCalled"),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidConfig {
                    field: "key_names",
                    ..
                }
            ),
            "{err}"
        );
        let p2 = apply(&p, PreferencesUpdate::new().key_name("Result", "outcome")).unwrap();
        assert_eq!(p2.key_names().renames().count(), 3);
        for bad in [("PhoneCalled", ""), ("Phone", "phone")] {
            assert!(apply(&p, PreferencesUpdate::new().key_name(bad.0, bad.1)).is_err());
        }
        let reset = apply(&p2, PreferencesUpdate::new().clear_key_names()).unwrap();
        assert!(reset.key_names().is_default());
    }

    #[test]
    fn method_is_named_and_query_is_not_an_encoding() {
        let (p, changed) = Preferences::default()
            .with_update(PreferencesUpdate::new().method(Method::Get))
            .unwrap();
        assert_eq!(changed, ["method"]);
        assert_eq!(p.method(), Method::Get);
        let err = apply(&p, PreferencesUpdate::new().encoding(Encoding::Query)).unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidConfig {
                field: "encoding",
                ..
            }
        ));
    }

    #[test]
    fn every_option_is_stored_and_restored_and_never_shown() {
        let (p, _) = Preferences::default()
            .with_update(
                PreferencesUpdate::new()
                    .url("https://example.com/h")
                    .api_key("X-Api-Key", "KEY-VALUE-1")
                    .header("X-Tenant", "acme")
                    .secret_header("X-Shared", "SHARED-VALUE-2")
                    .key_name("PhoneCalled", "phone")
                    .method(Method::Get),
            )
            .unwrap();
        let back = Preferences::from_stored(&p.to_stored()).unwrap();
        assert_eq!(format!("{p:?}"), format!("{back:?}"));
        assert_eq!(back.auth_header(), p.auth_header());
        assert_eq!(back.headers(), p.headers());
        assert!(back.headers()[1].is_secret());
        assert_eq!(back.key_names(), p.key_names());
        assert_eq!(back.method(), Method::Get);
        let bearer = apply(&p, PreferencesUpdate::new().bearer_token("TOKEN-VALUE-3")).unwrap();
        let back = Preferences::from_stored(&bearer.to_stored()).unwrap();
        assert_eq!(back.auth_header(), bearer.auth_header());

        let update = PreferencesUpdate::new()
            .bearer_token("TOKEN-VALUE-3")
            .api_key("X-Api-Key", "KEY-VALUE-1")
            .secret_header("X-Shared", "SHARED-VALUE-2");
        let shown = format!("{p:?} {p:#?} {bearer:?} {update:?} {update:#?}");
        for secret in ["KEY-VALUE-1", "SHARED-VALUE-2", "TOKEN-VALUE-3"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        // The search looks for text that is really there: the stored form holds it.
        let json = serde_json::to_string(&bearer.to_stored()).unwrap();
        assert!(json.contains("TOKEN-VALUE-3") && json.contains("SHARED-VALUE-2"));
    }

    #[test]
    fn an_account_stored_by_the_previous_release_loads_and_stores_unchanged() {
        let old = r#"{"enabled":true,"url":"https://example.com/h","username":"u","password":"pw","auth_scheme":"slash","encoding":"json","time_zone":"UTC","attempt_timeout_ms":15000}"#;
        let stored: StoredPreferences = serde_json::from_str(old).unwrap();
        let p = Preferences::from_stored(&stored).unwrap();
        assert_eq!(p.auth_scheme(), AuthScheme::Slash);
        assert_eq!(p.method(), Method::Post);
        assert!(p.headers().is_empty() && p.key_names().is_default() && !p.has_token());
        assert_eq!(serde_json::to_string(&p.to_stored()).unwrap(), old);
    }
}

mod signing {
    use super::*;

    fn secret(fill: u8) -> SigningSecret {
        use base64::Engine as _;
        let text = base64::engine::general_purpose::STANDARD.encode([fill; 32]);
        format!("whsec_{text}").parse().unwrap()
    }

    fn held(p: &Preferences) -> Vec<String> {
        p.signing_secrets()
            .iter()
            .map(SigningSecret::to_whsec)
            .collect()
    }

    #[test]
    fn set_rotate_and_clear_keep_at_most_two_newest_first() {
        let (a, b, c) = (secret(1), secret(2), secret(3));
        let p = Preferences::default();
        let (p, changed) = p
            .with_update(PreferencesUpdate::new().signing_secret(a.clone()))
            .unwrap();
        assert_eq!(changed, ["signing_secret"]);
        assert_eq!(held(&p), [a.to_whsec()]);

        let (p, changed) = p
            .with_update(PreferencesUpdate::new().rotate_signing_secret(b.clone()))
            .unwrap();
        assert_eq!(changed, ["signing_secret"]);
        assert_eq!(held(&p), [b.to_whsec(), a.to_whsec()]);
        assert_eq!(p.signing_secret_count(), 2);

        let (p, _) = p
            .with_update(PreferencesUpdate::new().rotate_signing_secret(c.clone()))
            .unwrap();
        assert_eq!(held(&p), [c.to_whsec(), b.to_whsec()]);

        // Setting one alone drops the previous; setting the same again is no change.
        let (same, changed) = p
            .with_update(PreferencesUpdate::new().signing_secret(c.clone()))
            .unwrap();
        assert_eq!(held(&same), [c.to_whsec()]);
        assert_eq!(changed, ["signing_secret"]);
        let (_, changed) = same
            .with_update(PreferencesUpdate::new().signing_secret(c.clone()))
            .unwrap();
        assert!(changed.is_empty());

        // Ending a rotation: clear, then the new one alone.
        let (p, _) = p
            .with_update(
                PreferencesUpdate::new()
                    .clear_signing_secrets()
                    .signing_secret(c.clone()),
            )
            .unwrap();
        assert_eq!(held(&p), [c.to_whsec()]);
        let (p, changed) = p
            .with_update(PreferencesUpdate::new().clear_signing_secrets())
            .unwrap();
        assert_eq!(changed, ["signing_secret"]);
        assert_eq!(p.signing_secret_count(), 0);

        // Rotating with none set just sets.
        let (p, _) = p
            .with_update(PreferencesUpdate::new().rotate_signing_secret(a.clone()))
            .unwrap();
        assert_eq!(held(&p), [a.to_whsec()]);
    }

    #[test]
    fn secrets_are_stored_in_order_and_never_shown() {
        let (a, b) = (secret(7), secret(8));
        let (p, _) = Preferences::default()
            .with_update(
                PreferencesUpdate::new()
                    .signing_secret(a.clone())
                    .rotate_signing_secret(b.clone()),
            )
            .unwrap();
        let back = Preferences::from_stored(&p.to_stored()).unwrap();
        assert_eq!(held(&back), [b.to_whsec(), a.to_whsec()]);
        let update = PreferencesUpdate::new().signing_secret(a.clone());
        let shown = format!("{p:?} {back:?} {update:?}");
        for text in [a.to_whsec(), b.to_whsec()] {
            assert!(!shown.contains(&text[6..]), "{shown}");
        }
        assert!(shown.contains("signing_secrets: 2"), "{shown}");
    }

    #[test]
    fn preferences_stored_before_signing_still_load_and_bad_stored_secrets_do_not() {
        let old = r#"{"enabled":true,"url":"https://example.com/h","username":null,"password":null,
            "auth_scheme":"basic","encoding":"form","time_zone":"UTC","attempt_timeout_ms":15000}"#;
        let stored: StoredPreferences = serde_json::from_str(old).unwrap();
        let p = Preferences::from_stored(&stored).unwrap();
        assert_eq!(p.signing_secret_count(), 0);
        assert!(!p.mask_phone() && !p.omit_result_notes());

        let bad = old.replace("15000}", r#"15000,"signing_secrets":["not-a-secret"]}"#);
        let stored: StoredPreferences = serde_json::from_str(&bad).unwrap();
        let err = Preferences::from_stored(&stored).unwrap_err();
        assert!(!err.to_string().contains("not-a-secret"), "{err}");

        let s = secret(9).to_whsec();
        let three = old.replace(
            "15000}",
            &format!(r#"15000,"signing_secrets":["{s}","{s}","{s}"]}}"#),
        );
        let stored: StoredPreferences = serde_json::from_str(&three).unwrap();
        assert!(Preferences::from_stored(&stored).is_err());
    }
}
