//! Secrets never show: every public type that holds a password or a signing secret, and every
//! error made from one, is formatted with `Debug` (and `Display` where it has one) and searched
//! for the password, the Authorization value and the signing secret. The one way out is the
//! settings the store is handed, which are checked to hold them, so the search is known to
//! look for the right text.
#![cfg(any(feature = "hyper", feature = "ureq"))]

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use call_result_webhook::{
    Error, PreferencesUpdate, Principal, UrlPolicy, Webhooks,
    auth::{AuthScheme, Credentials, Secret},
    delivery::SystemClock,
    store::Settings as _,
};
use support::backends::{BACKENDS, Setup, expect_err};
use support::security::engine::Engine;
use support::security::request_with;

const PASSWORD: &str = "Pa55w0rd-Hunter2-XYZZY";
const USER: &str = "dialer";

/// Every text that would give a secret away.
fn forbidden() -> Vec<String> {
    let mut all = vec![
        PASSWORD.to_owned(),
        STANDARD.encode(format!("{USER}:{PASSWORD}")),
        STANDARD.encode(format!("{USER}/{PASSWORD}")),
    ];
    let (current, previous) = signing_secrets();
    for s in [current, previous] {
        let text = s.to_whsec();
        // The whole secret, and its key part alone.
        all.push(text[6..].to_owned());
        all.push(text);
    }
    all
}

fn signing_secrets() -> (
    call_result_webhook::signing::SigningSecret,
    call_result_webhook::signing::SigningSecret,
) {
    let previous = STANDARD.encode(b"the previous key, kept while rotating");
    (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap(),
        format!("whsec_{previous}").parse().unwrap(),
    )
}

/// An update setting every secret the crate holds.
fn secret_update() -> PreferencesUpdate {
    let (current, previous) = signing_secrets();
    PreferencesUpdate::new()
        .enabled(true)
        .url("https://crm.example/hook?token=t0ken")
        .credentials(USER, PASSWORD)
        .signing_secret(previous)
        .rotate_signing_secret(current)
}

#[track_caller]
fn assert_hidden(what: &str, shown: &str) {
    for secret in forbidden() {
        assert!(!shown.contains(&secret), "{what} shows a secret: {shown}");
    }
}

#[test]
fn no_public_type_that_holds_a_secret_shows_it() {
    let admin = Principal::administrator("alice");
    let engine = Engine::new(UrlPolicy::new(), SystemClock);
    engine
        .webhooks
        .update_preferences_blocking(&admin, &"acme".into(), secret_update())
        .unwrap();
    let account = engine.webhooks.account(&"acme".into()).unwrap();
    let preferences = account.preferences().clone();
    let credentials = Credentials::new(USER, PASSWORD).unwrap();
    let secret = Secret::new(PASSWORD);
    let authorization = credentials.authorization(AuthScheme::Basic).unwrap();

    let mut shown: Vec<(&str, String)> = vec![
        ("Credentials", format!("{credentials:?}")),
        (
            "Credentials::password",
            format!("{:?} {}", credentials.password(), credentials.password()),
        ),
        ("Secret", format!("{secret:?} {secret}")),
        ("Authorization HeaderValue", format!("{authorization:?}")),
        ("Preferences", format!("{preferences:?} {preferences:#?}")),
        ("Account", format!("{account:?} {account:#?}")),
        ("AuditRecord", format!("{:?}", account.audit_log())),
        (
            "PreferencesUpdate",
            format!("{:?} {:#?}", secret_update(), secret_update()),
        ),
    ];
    let (current, previous) = signing_secrets();
    shown.push((
        "SigningSecret",
        format!("{current:?} {current} {previous:#?}"),
    ));

    // Errors made from bad secrets: they name the field, never the value.
    let mut errors: Vec<Error> = vec![
        Credentials::new(USER, format!("{PASSWORD}\r\n")).unwrap_err(),
        Credentials::new(format!("{USER}:x"), PASSWORD)
            .unwrap()
            .authorization(AuthScheme::Basic)
            .unwrap_err(),
        engine
            .webhooks
            .update_preferences_blocking(
                &Principal::user("mallory"),
                &"acme".into(),
                PreferencesUpdate::new().credentials(USER, PASSWORD),
            )
            .unwrap_err(),
        call_result_webhook::preferences::WebhookUrl::parse(&format!(
            "https://{USER}:{PASSWORD}@crm.example/"
        ))
        .unwrap_err(),
        UrlPolicy::new()
            .check_url(
                &url::Url::parse(&format!("https://{USER}:{PASSWORD}@crm.example/")).unwrap(),
            )
            .unwrap_err(),
    ];
    let text = signing_secrets().0.to_whsec();
    errors.push(
        format!("{text}!")
            .parse::<call_result_webhook::signing::SigningSecret>()
            .unwrap_err(),
    );
    errors.push(
        text[6..]
            .parse::<call_result_webhook::signing::SigningSecret>()
            .unwrap_err(),
    );
    errors.push(
        format!("whsec_{}", &text[6..20])
            .parse::<call_result_webhook::signing::SigningSecret>()
            .unwrap_err(),
    );
    for err in &errors {
        shown.push(("Error", format!("{err} {err:?} {err:#?}")));
    }

    // The dispatchers and the engine, configured and after use.
    let setup = Setup::new(UrlPolicy::new());
    #[cfg(feature = "hyper")]
    shown.push(("HyperDispatcher", format!("{:?}", setup.hyper())));
    #[cfg(feature = "ureq")]
    shown.push(("UreqDispatcher", format!("{:?}", setup.ureq())));
    let webhooks: &Webhooks = &engine.webhooks;
    shown.push(("Webhooks", format!("{webhooks:?} {webhooks:#?}")));
    shown.push((
        "Webhooks::account",
        format!("{:?}", webhooks.account(&"acme".into())),
    ));
    shown.push((
        "WebhooksBuilder",
        format!("{:?}", Webhooks::builder().policy(UrlPolicy::new())),
    ));

    for (what, text) in &shown {
        assert_hidden(what, text);
    }

    // What the store is handed is the one way out, and it does carry them: the search above
    // looked for text that is really there.
    let stored = engine
        .store
        .load_account(&"acme".into())
        .unwrap()
        .expect("saved")
        .json;
    assert!(stored.contains(PASSWORD));
    assert!(stored.contains(&signing_secrets().0.to_whsec()));
}

#[test]
fn transport_errors_and_requests_never_show_the_authorization() {
    // Refused before connecting, and failing to connect: neither error shows a secret.
    let d = Setup::new(UrlPolicy::new().allow_http(true)).build();
    let unused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        drop(l);
        a
    };
    let open = Setup::new(UrlPolicy::new().allow_http(true).allow_private()).build();
    for &backend in BACKENDS {
        let refused = request_with("http://10.0.0.1/hook", secret_update());
        assert_hidden("a request", &format!("{refused:?}"));
        let err = expect_err(d.send(backend, refused), "refused");
        assert_hidden("a refusal", &format!("{err} {err:?}"));

        let unreachable = request_with(&format!("http://{unused}/hook"), secret_update());
        let err = expect_err(open.send(backend, unreachable), "unreachable");
        assert_hidden("a connect error", &format!("{err} {err:?}"));
    }
}
