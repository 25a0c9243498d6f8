//! The portal over HTTP: a real server on 127.0.0.1 (axum), a stand-in login, real receivers.
//! Each protection has a test here that fails when the protection is taken away.

#![cfg(all(feature = "portal", feature = "hyper"))]

mod portal_support;

use call_result_webhook::auth::AuthScheme;
use call_result_webhook::signing::SigningSecret;
use call_result_webhook::store::DeliveryFilter;
use call_result_webhook::{CallResult, PreferencesUpdate, Principal, Submitted};
use portal_support::{ACCOUNT, Answer, As, Bench, Receiver};

const XSS: &str = "<img src=x onerror=alert(1)>";
const XSS_ESCAPED: &str = "&lt;img src=x onerror=alert(1)&gt;";

const PAGES: [&str; 4] = [
    "/webhooks/settings",
    "/webhooks/campaigns",
    "/webhooks/deliveries",
    "/webhooks/dead-letters",
];

const API_READS: [&str; 5] = [
    "/webhooks/api/session",
    "/webhooks/api/settings",
    "/webhooks/api/campaigns",
    "/webhooks/api/deliveries",
    "/webhooks/api/dead-letters",
];

/// Every route that changes something, as a form and as JSON.
const FORM_CHANGES: [&str; 6] = [
    "/webhooks/settings",
    "/webhooks/campaign-webhook",
    "/webhooks/replay",
    "/webhooks/remove",
    "/webhooks/resume",
    "/webhooks/send-test",
];

const API_CHANGES: [&str; 6] = [
    "/webhooks/api/settings",
    "/webhooks/api/campaign-webhook",
    "/webhooks/api/replay",
    "/webhooks/api/remove",
    "/webhooks/api/resume",
    "/webhooks/api/send-test",
];

fn admin() -> Principal {
    Principal::administrator("setup")
}

/// The account with a URL and the campaign `winter` switched on.
fn configure(bench: &Bench, url: &str) {
    bench.block_on(async {
        bench
            .webhooks
            .update_preferences(
                &admin(),
                &ACCOUNT.into(),
                PreferencesUpdate::new()
                    .enabled(true)
                    .url(url)
                    .credentials("dialer", "pa55-word-9f3")
                    .retry_schedule(call_result_webhook::delivery::RetrySchedule::new([]).unwrap()),
            )
            .await
            .unwrap();
        bench
            .webhooks
            .set_campaign_webhook(&admin(), &ACCOUNT.into(), &"winter".into(), true)
            .await
            .unwrap();
    });
}

/// The settings form as the page shows it, with the changes given, as form fields.
fn settings_fields(page: &Answer, changes: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut fields: Vec<(&'static str, String)> = vec![
        ("csrf", page.hidden("csrf")),
        ("digest", page.hidden("digest")),
        ("url", field_value(page, "url")),
        ("username", field_value(page, "username")),
        ("password", String::new()),
        ("auth_scheme", "basic".into()),
        ("token", String::new()),
        ("api_key_header", field_value(page, "api_key_header")),
        ("method", "post".into()),
        ("encoding", "form".into()),
        ("time_zone", field_value(page, "time_zone")),
        (
            "attempt_timeout_seconds",
            field_value(page, "attempt_timeout_seconds"),
        ),
        ("retry_schedule", field_value(page, "retry_schedule")),
        ("headers", String::new()),
        ("secret_header_name", String::new()),
        ("secret_header_value", String::new()),
        ("key_names", String::new()),
        ("signing_action", "keep".into()),
        ("signing_secret", String::new()),
    ];
    if page.body.contains("name=\"enabled\" value=\"on\" checked") {
        fields.push(("enabled", "on".into()));
    }
    for (name, value) in changes {
        fields.retain(|(n, _)| n != name);
        fields.push((name, (*value).to_owned()));
    }
    fields
}

/// The `value` of the text input `name`, HTML entities of `&` and quotes undone.
fn field_value(page: &Answer, name: &str) -> String {
    let marker = format!("id=\"{name}\" name=\"{name}\" value=\"");
    let Some(at) = page.body.find(&marker) else {
        return String::new();
    };
    let at = at + marker.len();
    let end = page.body[at..].find('"').unwrap() + at;
    page.body[at..end]
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn as_pairs<'a>(fields: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    fields.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

fn url_of(bench: &Bench) -> Option<String> {
    bench
        .webhooks
        .account(&ACCOUNT.into())
        .and_then(|a| a.preferences().url().map(|u| u.as_str().to_owned()))
}

#[test]
fn without_a_principal_every_route_is_401() {
    let bench = Bench::start();
    for path in PAGES.iter().chain(&API_READS) {
        let answer = bench.get(As::Nobody, path);
        assert_eq!(answer.status, 401, "GET {path}");
        assert!(answer.header("content-security-policy").is_some());
    }
    for path in FORM_CHANGES.iter().chain(&API_CHANGES) {
        let answer = bench.post_form(As::Nobody, path, &[]);
        assert_eq!(answer.status, 401, "POST {path}");
    }
}

#[test]
fn every_answer_carries_the_security_headers() {
    let bench = Bench::start();
    for who in [As::Admin, As::Viewer, As::Nobody] {
        // A path the portal does not have is answered by the portal too (404), with the
        // same headers.
        let unknown = ["/webhooks/nope", "/webhooks/api/nope/deeper"];
        for path in PAGES.iter().chain(&API_READS).chain(&unknown) {
            let answer = bench.get(who, path);
            if unknown.contains(path) {
                assert_eq!(answer.status, 404, "{path}");
            }
            let csp = answer
                .header("content-security-policy")
                .unwrap_or_else(|| panic!("no CSP on {path}"));
            assert!(csp.contains("default-src 'none'"), "{csp}");
            assert!(!csp.contains("unsafe-inline"), "{csp}");
            assert!(!csp.contains("script-src"), "no script at all: {csp}");
            assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
            assert_eq!(answer.header("x-frame-options"), Some("DENY"));
            // Not no-referrer: a browser then sends `Origin: null` on the portal's own posts.
            assert_eq!(answer.header("referrer-policy"), Some("same-origin"));
            assert_eq!(answer.header("cache-control"), Some("no-store"));
            assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
        }
    }
    // The page's only style is admitted by its hash: the page does not depend on unsafe-inline.
    let page = bench.get(As::Admin, "/webhooks/settings");
    assert!(page.body.contains("<style>"));
    assert!(!page.body.contains("<script"));
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("style-src 'sha256-")
    );
}

#[test]
fn an_administrator_saves_the_page_fields_and_the_save_is_audited() {
    let bench = Bench::start();
    let receiver = Receiver::start(&[(200, "ok")]);
    let page = bench.get(As::Admin, "/webhooks/settings");
    assert_eq!(page.status, 200);
    for label in ["Enable Web Hook", "URL", "User Name", "Password", "Save"] {
        assert!(page.body.contains(label), "the page says {label}");
    }
    let fields = settings_fields(
        &page,
        &[
            ("enabled", "on"),
            ("url", &receiver.url),
            ("username", "crm-user"),
            ("password", "n3w-pa55"),
            ("encoding", "json"),
            ("time_zone", "Australia/Brisbane"),
            ("retry_schedule", "5s, 1m"),
            ("headers", "X-Tenant: acme"),
            ("key_names", "PhoneCalled=phone"),
        ],
    );
    let saved = bench.post_form(As::Admin, "/webhooks/settings", &as_pairs(&fields));
    assert_eq!(saved.status, 303, "{}", saved.body);
    assert_eq!(saved.header("location"), Some("settings?notice=saved"));

    let account = bench.webhooks.account(&ACCOUNT.into()).unwrap();
    let p = account.preferences();
    assert!(p.enabled());
    assert_eq!(p.url().unwrap().as_str(), receiver.url);
    assert_eq!(p.username(), Some("crm-user"));
    assert!(p.has_password());
    assert_eq!(p.encoding().as_str(), "json");
    assert_eq!(p.time_zone_name(), "Australia/Brisbane");
    assert_eq!(p.retry_schedule().delays().len(), 2);
    assert_eq!(p.headers()[0].value(), Some("acme"));
    assert_eq!(p.key_names().name("PhoneCalled"), Some("phone"));
    let audit = account.audit_log().last().unwrap();
    assert_eq!(audit.principal, "alice");
    assert!(audit.fields.iter().any(|f| f == "url"));

    // Saved again unchanged, with the password field left empty: the password is kept.
    let page = bench.get(As::Admin, "/webhooks/settings?notice=saved");
    assert!(page.body.contains("Saved."));
    let fields = settings_fields(&page, &[("encoding", "json")]);
    let again = bench.post_form(As::Admin, "/webhooks/settings", &as_pairs(&fields));
    assert_eq!(again.status, 303, "{}", again.body);
    let p = bench.webhooks.account(&ACCOUNT.into()).unwrap();
    assert!(p.preferences().has_password());
    assert_eq!(p.preferences().username(), Some("crm-user"));

    // The JSON API saves through the same checks.
    let csrf = bench.csrf(As::Admin);
    let digest = bench.get(As::Admin, "/webhooks/api/settings").json()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = format!(r#"{{"digest":"{digest}","mask_phone":true}}"#);
    let api = bench.post_json(As::Admin, "/webhooks/api/settings", Some(&csrf), &body);
    assert_eq!(api.status, 200, "{}", api.body);
    assert_eq!(api.json()["settings"]["mask_phone"], true);
}

#[test]
fn a_save_over_someone_elses_newer_change_is_refused_and_says_so() {
    let bench = Bench::start();
    configure(&bench, "http://127.0.0.1:9/first");
    let page = bench.get(As::Admin, "/webhooks/settings");
    // Someone else saves meanwhile.
    bench.block_on(async {
        bench
            .webhooks
            .update_preferences(
                &Principal::administrator("bob"),
                &ACCOUNT.into(),
                PreferencesUpdate::new().url("http://127.0.0.1:9/bobs"),
            )
            .await
            .unwrap();
    });
    let fields = settings_fields(&page, &[("time_zone", "Europe/Paris")]);
    let refused = bench.post_form(As::Admin, "/webhooks/settings", &as_pairs(&fields));
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(refused.body.contains("Someone else saved these settings"));
    // Bob's change stands, alice's was not made, and the form shows bob's URL.
    assert_eq!(url_of(&bench).as_deref(), Some("http://127.0.0.1:9/bobs"));
    let p = bench.webhooks.account(&ACCOUNT.into()).unwrap();
    assert_eq!(p.preferences().time_zone_name(), "UTC");
    assert!(refused.body.contains("http://127.0.0.1:9/bobs"));

    // The same over the JSON API.
    let csrf = bench.csrf(As::Admin);
    let stale = page.hidden("digest");
    let body = format!(r#"{{"digest":"{stale}","time_zone":"Europe/Paris"}}"#);
    let api = bench.post_json(As::Admin, "/webhooks/api/settings", Some(&csrf), &body);
    assert_eq!(api.status, 409, "{}", api.body);
}

#[test]
fn a_url_the_policy_refuses_is_refused_beside_the_field() {
    let bench = Bench::start();
    let page = bench.get(As::Admin, "/webhooks/settings");
    let fields = settings_fields(&page, &[("url", "http://169.254.169.254/latest")]);
    let refused = bench.post_form(As::Admin, "/webhooks/settings", &as_pairs(&fields));
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body.contains("id=\"url-error\""),
        "{}",
        refused.body
    );
    assert!(refused.body.contains("169.254.169.254"));
    assert_eq!(url_of(&bench), None);
}

#[test]
fn no_secret_reaches_any_page_or_json_answer() {
    let bench = Bench::start();
    let password = "pw-4e1d9c0b7a";
    let token = "tok-8c2f1e6d5b";
    let secret_header = "hdr-3a9b7c1d2e";
    let signing = SigningSecret::generate().unwrap();
    let whsec = signing.to_whsec();
    bench.block_on(async {
        bench
            .webhooks
            .update_preferences(
                &admin(),
                &ACCOUNT.into(),
                PreferencesUpdate::new()
                    .enabled(true)
                    .url("http://127.0.0.1:9/hook")
                    .credentials("dialer", password)
                    .bearer_token(token)
                    .secret_header("X-Shared", secret_header)
                    .signing_secret(signing),
            )
            .await
            .unwrap();
    });
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("dialer:{password}"),
    );
    let slash = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("dialer/{password}"),
    );
    let key = whsec.trim_start_matches("whsec_").to_owned();
    let secrets = [password, token, secret_header, &whsec, &key, &basic, &slash];
    let check = |what: &str, answer: &Answer| {
        for secret in &secrets {
            assert!(!answer.body.contains(secret), "{what} shows a secret");
        }
    };
    for who in [As::Admin, As::Viewer] {
        for path in PAGES.iter().chain(&API_READS) {
            check(path, &bench.get(who, path));
        }
    }
    // The pages say the secrets are set.
    let page = bench.get(As::Admin, "/webhooks/settings");
    assert!(page.body.contains("set; leave empty to keep it"));
    // Nor after a refused save (re-rendered), nor after a stale one, nor in the API's answer.
    let fields = settings_fields(&page, &[("url", "http://169.254.169.254/")]);
    check(
        "a refused save",
        &bench.post_form(As::Admin, "/webhooks/settings", &as_pairs(&fields)),
    );
    let mut stale = settings_fields(&page, &[]);
    stale.retain(|(n, _)| *n != "digest");
    stale.push(("digest", "stale".into()));
    check(
        "a stale save",
        &bench.post_form(As::Admin, "/webhooks/settings", &as_pairs(&stale)),
    );
    let csrf = bench.csrf(As::Admin);
    let digest = bench.get(As::Admin, "/webhooks/api/settings").json()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let saved = bench.post_json(
        As::Admin,
        "/webhooks/api/settings",
        Some(&csrf),
        &format!(r#"{{"digest":"{digest}","omit_result_notes":true}}"#),
    );
    assert_eq!(saved.status, 200, "{}", saved.body);
    check("the API's save", &saved);
    // The secrets are all still there, unchanged by the saves.
    let p = bench.webhooks.account(&ACCOUNT.into()).unwrap();
    assert!(p.preferences().has_password() && p.preferences().has_token());
    assert_eq!(p.preferences().auth_scheme(), AuthScheme::Bearer);
    assert_eq!(p.preferences().signing_secret_count(), 1);
}

#[test]
fn a_campaign_name_and_a_receivers_answer_are_shown_as_text() {
    let bench = Bench::start();
    let receiver = Receiver::start(&[(200, XSS)]);
    configure(&bench, &receiver.url);
    bench.block_on(async {
        bench
            .webhooks
            .set_campaign_webhook(&admin(), &ACCOUNT.into(), &XSS.into(), true)
            .await
            .unwrap();
    });
    for who in [As::Admin, As::Viewer] {
        for path in ["/webhooks/campaigns", "/webhooks/deliveries"] {
            let page = bench.get(who, path);
            assert!(page.body.contains(XSS_ESCAPED), "{path}: {}", page.body);
            assert!(!page.body.contains(XSS), "{path} has the raw tag");
        }
    }
    let csrf = bench.csrf(As::Admin);
    let answer = bench.post_form(As::Admin, "/webhooks/send-test", &[("csrf", &csrf)]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer
            .body
            .contains("the receiver answered <strong>200</strong>")
    );
    assert!(answer.body.contains(XSS_ESCAPED), "{}", answer.body);
    assert!(!answer.body.contains(XSS));
    // A value typed into the form and shown again after a refusal is escaped too.
    let page = bench.get(As::Admin, "/webhooks/settings");
    let fields = settings_fields(&page, &[("time_zone", "\"><img src=x onerror=alert(1)>")]);
    let refused = bench.post_form(As::Admin, "/webhooks/settings", &as_pairs(&fields));
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(!refused.body.contains(XSS), "{}", refused.body);
}

#[test]
fn a_change_without_the_sessions_csrf_token_changes_nothing() {
    let bench = Bench::start();
    let page = bench.get(As::Admin, "/webhooks/settings");
    for token in [None, Some("forged"), Some(bench.csrf(As::Viewer).as_str())] {
        let mut fields = settings_fields(&page, &[("url", "http://127.0.0.1:9/csrf")]);
        fields.retain(|(n, _)| *n != "csrf");
        if let Some(token) = token {
            fields.push(("csrf", token.to_owned()));
        }
        let refused = bench.post_form(As::Admin, "/webhooks/settings", &as_pairs(&fields));
        assert_eq!(refused.status, 403, "{token:?}: {}", refused.body);
        assert!(refused.body.contains("security token"));
        let api = bench.post_json(
            As::Admin,
            "/webhooks/api/campaign-webhook",
            token,
            r#"{"campaign":"winter","enabled":true}"#,
        );
        assert_eq!(api.status, 403, "{token:?}: {}", api.body);
    }
    assert_eq!(url_of(&bench), None);
    assert!(bench.webhooks.account(&ACCOUNT.into()).is_none());
    // With the token, the same change is made.
    let fields = settings_fields(&page, &[("url", "http://127.0.0.1:9/csrf")]);
    let saved = bench.post_form(As::Admin, "/webhooks/settings", &as_pairs(&fields));
    assert_eq!(saved.status, 303, "{}", saved.body);
}

#[test]
fn a_change_from_another_origin_changes_nothing() {
    let bench = Bench::start();
    let page = bench.get(As::Admin, "/webhooks/settings");
    let fields = settings_fields(&page, &[("url", "http://127.0.0.1:9/origin")]);
    for origin in [Some("http://evil.example"), Some("null"), None] {
        let refused =
            bench.post_form_from(As::Admin, "/webhooks/settings", &as_pairs(&fields), origin);
        assert_eq!(refused.status, 403, "{origin:?}: {}", refused.body);
        assert!(refused.body.contains("Origin"));
    }
    assert_eq!(url_of(&bench), None);
}

#[test]
fn a_viewer_sees_everything_read_only_and_every_change_is_refused() {
    let bench = Bench::start();
    let receiver = Receiver::start(&[(400, "no")]);
    configure(&bench, &receiver.url);
    submit(&bench, "winter");
    wait_for_dead_letters(&bench, 1);

    let page = bench.get(As::Viewer, "/webhooks/settings");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<fieldset disabled>"));
    assert!(!page.body.contains("<button"), "no Save for a viewer");
    assert!(!page.body.contains("name=\"csrf\""));
    assert!(page.body.contains("full administrative permissions"));
    let campaigns = bench.get(As::Viewer, "/webhooks/campaigns");
    assert!(
        campaigns.body.contains("aria-label=\"Failing\""),
        "the 400 failed it"
    );
    assert!(!campaigns.body.contains("<button"));

    // Forged changes with the viewer's own session: the right Origin and the viewer's token.
    let csrf = bench.csrf(As::Viewer);
    let before = bench.webhooks.account(&ACCOUNT.into()).unwrap();
    let admin_page = bench.get(As::Admin, "/webhooks/settings");
    let digest = admin_page.hidden("digest");
    let forged_settings = [
        ("csrf", csrf.as_str()),
        ("digest", digest.as_str()),
        ("url", "http://127.0.0.1:9/forged"),
        ("enabled", "on"),
    ];
    for path in FORM_CHANGES {
        let fields: Vec<(&str, &str)> = if path.ends_with("/settings") {
            forged_settings.to_vec()
        } else {
            vec![("csrf", csrf.as_str()), ("campaign", "winter")]
        };
        let refused = bench.post_form(As::Viewer, path, &fields);
        assert_eq!(refused.status, 403, "{path}: {}", refused.body);
        assert!(refused.body.contains("full administrative permissions"));
    }
    let body_of = |path: &str| {
        if path.ends_with("/settings") {
            format!(r#"{{"digest":"{digest}","url":"http://127.0.0.1:9/forged"}}"#)
        } else if path.ends_with("campaign-webhook") {
            r#"{"campaign":"winter","enabled":false}"#.to_owned()
        } else {
            "{}".to_owned()
        }
    };
    for path in API_CHANGES {
        let refused = bench.post_json(As::Viewer, path, Some(&csrf), &body_of(path));
        assert_eq!(refused.status, 403, "{path}: {}", refused.body);
    }
    let after = bench.webhooks.account(&ACCOUNT.into()).unwrap();
    assert_eq!(after.audit_log(), before.audit_log(), "nothing was saved");
    assert_eq!(url_of(&bench).as_deref(), Some(receiver.url.as_str()));
    assert!(after.campaign_webhook_enabled(&"winter".into()));
    assert_eq!(
        receiver.received().len(),
        1,
        "no test was sent, nothing replayed"
    );
    let still = bench.block_on(bench.webhooks.dead_letters(
        &admin(),
        &DeliveryFilter::account(ACCOUNT),
        10,
    ));
    assert_eq!(still.unwrap().len(), 1, "the dead letter is still there");
}

#[test]
fn switching_a_campaigns_enable_webhook_changes_its_icon() {
    let bench = Bench::start();
    configure(&bench, "http://127.0.0.1:9/hook");
    let page = bench.get(As::Admin, "/webhooks/campaigns");
    assert!(page.body.contains("Additional Settings"));
    assert!(page.body.contains("Enable WebHook"));
    // "spring" is known to the dialer only: listed, off.
    assert!(page.body.contains("spring"));
    let row = |page: &Answer, campaign: &str| {
        let at = page.body.find(&format!("<tr><td>{campaign}</td>")).unwrap();
        let end = page.body[at..].find("</tr>").unwrap() + at;
        page.body[at..end].to_owned()
    };
    assert!(row(&page, "winter").contains("aria-label=\"Active\""));
    assert!(row(&page, "spring").contains("aria-label=\"Off\""));

    let csrf = page.hidden("csrf");
    let off = bench.post_form(
        As::Admin,
        "/webhooks/campaign-webhook",
        &[("csrf", &csrf), ("campaign", "winter")],
    );
    assert_eq!(off.status, 303, "{}", off.body);
    let page = bench.get(As::Admin, "/webhooks/campaigns");
    assert!(row(&page, "winter").contains("aria-label=\"Off\""));
    let skipped = bench.block_on(bench.webhooks.submit(
        &ACCOUNT.into(),
        &"winter".into(),
        CallResult::builder().reference("1").build(),
    ));
    assert!(
        !skipped.unwrap().is_accepted(),
        "the next call result is not sent"
    );

    let on = bench.post_json(
        As::Admin,
        "/webhooks/api/campaign-webhook",
        Some(&csrf),
        r#"{"campaign":"spring","enabled":true}"#,
    );
    assert_eq!(on.status, 200, "{}", on.body);
    let list = bench.get(As::Admin, "/webhooks/api/campaigns").json();
    let spring = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["campaign"] == "spring")
        .unwrap();
    assert_eq!(spring["status"], "Active");
    let audit = bench.webhooks.account(&ACCOUNT.into()).unwrap();
    assert_eq!(audit.audit_log().last().unwrap().principal, "alice");
}

fn submit(bench: &Bench, campaign: &str) -> String {
    let submitted = bench.block_on(bench.webhooks.submit(
        &ACCOUNT.into(),
        &campaign.into(),
        CallResult::builder().reference("123").build(),
    ));
    match submitted.unwrap() {
        Submitted::Accepted(id) => id.to_string(),
        other => panic!("not accepted: {other:?}"),
    }
}

fn wait_for_dead_letters(bench: &Bench, n: usize) {
    bench.within("dead letters", || {
        bench
            .block_on(
                bench
                    .webhooks
                    .dead_letters(&admin(), &DeliveryFilter::account(ACCOUNT), 100),
            )
            .unwrap()
            .len()
            == n
    });
}

#[test]
fn a_dead_letter_is_replayed_with_its_id_and_removed_one_or_all() {
    let bench = Bench::start();
    let receiver = Receiver::start(&[(400, "bad"), (200, "ok"), (400, "bad"), (400, "bad")]);
    configure(&bench, &receiver.url);
    let id = submit(&bench, "winter");
    wait_for_dead_letters(&bench, 1);
    let page = bench.get(As::Admin, "/webhooks/dead-letters");
    assert!(page.body.contains(&id));
    assert!(page.body.contains("Replay") && page.body.contains("Remove"));
    let csrf = page.hidden("csrf");

    let replayed = bench.post_form(
        As::Admin,
        "/webhooks/replay",
        &[("csrf", &csrf), ("id", &id)],
    );
    assert_eq!(replayed.status, 303, "{}", replayed.body);
    bench.within("the replay", || receiver.received().len() == 2);
    let got = receiver.received();
    assert_eq!(got[1].header("webhook-id").as_deref(), Some(id.as_str()));
    wait_for_dead_letters(&bench, 0);

    let first = submit(&bench, "winter");
    let second = submit(&bench, "winter");
    wait_for_dead_letters(&bench, 2);
    let removed = bench.post_json(
        As::Admin,
        "/webhooks/api/remove",
        Some(&csrf),
        &format!(r#"{{"id":"{first}"}}"#),
    );
    assert_eq!(removed.json()["count"], 1, "{}", removed.body);
    let page = bench.get(As::Admin, "/webhooks/dead-letters");
    assert!(!page.body.contains(&first) && page.body.contains(&second));
    let all = bench.post_form(As::Admin, "/webhooks/remove", &[("csrf", &csrf)]);
    assert_eq!(all.status, 303, "{}", all.body);
    wait_for_dead_letters(&bench, 0);
    assert!(
        bench
            .get(As::Admin, "/webhooks/dead-letters?notice=removed")
            .body
            .contains("No dead letter.")
    );
}

#[test]
fn a_gone_endpoint_is_paused_and_resumed_from_the_page() {
    let bench = Bench::start();
    let receiver = Receiver::start(&[(410, "gone"), (200, "ok")]);
    configure(&bench, &receiver.url);
    submit(&bench, "winter");
    bench.within("the pause", || {
        bench.webhooks.indicator(&ACCOUNT.into(), None)
            == call_result_webhook::campaign::WebhookIndicator::Paused
    });
    let page = bench.get(As::Admin, "/webhooks/campaigns");
    assert!(page.body.contains("aria-label=\"Paused\""));
    let page = bench.get(As::Admin, "/webhooks/dead-letters");
    assert!(page.body.contains("Resume"), "{}", page.body);
    let csrf = page.hidden("csrf");
    let resumed = bench.post_form(As::Admin, "/webhooks/resume", &[("csrf", &csrf)]);
    assert_eq!(resumed.status, 303, "{}", resumed.body);
    assert_eq!(
        resumed.header("location"),
        Some("dead-letters?notice=resumed")
    );
    assert_ne!(
        bench.webhooks.indicator(&ACCOUNT.into(), None),
        call_result_webhook::campaign::WebhookIndicator::Paused
    );
}

#[test]
fn send_test_sends_the_sample_with_the_accounts_auth_and_shows_the_answer() {
    let bench = Bench::start();
    let receiver = Receiver::start(&[(201, "thanks")]);
    configure(&bench, &receiver.url);
    let csrf = bench.csrf(As::Admin);
    let answer = bench.post_json(As::Admin, "/webhooks/api/send-test", Some(&csrf), "");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let json = answer.json();
    assert_eq!(json["status"], 201);
    assert_eq!(json["body_start"], "thanks");
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "dialer:pa55-word-9f3",
    );
    assert_eq!(
        got[0].header("authorization"),
        Some(format!("Basic {basic}"))
    );
    assert_eq!(
        got[0].header("webhook-id").as_deref(),
        json["webhook_id"].as_str()
    );
    assert!(got[0].body.contains("Reference=123"), "{}", got[0].body);
    assert!(got[0].body.contains("WrapUpReasonName=Payment+Taken"));
    // Nothing was stored: no delivery counted.
    let status = bench
        .block_on(bench.webhooks.status(&ACCOUNT.into(), None))
        .unwrap();
    assert_eq!(status.stats.pending + status.stats.delivered, 0);
}

/// A receiver that echoes the request's Authorization header back: "Send test" shows its
/// answer with the credential blanked out, as the attempts log keeps it.
#[test]
fn send_test_blanks_the_accounts_credential_out_of_an_echoing_answer() {
    let bench = Bench::start();
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "dialer:pa55-word-9f3",
    );
    let echo = format!("you sent: Authorization: Basic {basic}");
    let receiver = Receiver::start(&[(200, echo.as_str())]);
    configure(&bench, &receiver.url);
    let csrf = bench.csrf(As::Admin);
    let answer = bench.post_json(As::Admin, "/webhooks/api/send-test", Some(&csrf), "");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json()["body_start"],
        "you sent: Authorization: [redacted]"
    );
    assert!(!answer.body.contains(&basic));
    assert_eq!(
        receiver.received()[0].header("authorization"),
        Some(format!("Basic {basic}")),
        "the receiver did get the credential"
    );
}

/// The example's program, built by `cargo test` beside this test (examples are).
fn example_binary() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?.join("examples");
    let path = dir.join(format!("portal_axum{}", std::env::consts::EXE_SUFFIX));
    path.exists().then_some(path)
}

/// Stops the example when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_examples_login_sets_an_httponly_samesite_strict_cookie_the_portal_accepts() {
    let Some(binary) = example_binary() else {
        eprintln!("examples/portal_axum was not built beside this test (run `cargo test`)");
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _child = Child(
        std::process::Command::new(binary)
            .arg(addr.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < until,
            "the example did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let wrong = portal_support::exchange(addr, "POST", "/login", &form, b"user=alice&password=no");
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
    let signed =
        portal_support::exchange(addr, "POST", "/login", &form, b"user=alice&password=demo");
    assert_eq!(signed.status, 303);
    assert_eq!(signed.header("location"), Some("/webhooks/settings"));
    let cookie = signed.header("set-cookie").expect("a session cookie");
    assert!(cookie.contains("; HttpOnly"), "{cookie}");
    assert!(cookie.contains("; SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();

    let anonymous = portal_support::exchange(addr, "GET", "/webhooks/settings", &[], b"");
    assert_eq!(anonymous.status, 401);
    let page = portal_support::exchange(
        addr,
        "GET",
        "/webhooks/settings",
        &[("cookie", session.as_str())],
        b"",
    );
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Enable Web Hook") && page.body.contains("<button"));
}

/// A save whose form was rendered before another process saved the account (a `Webhooks` of
/// its own on the same store, whose save this one's copy in force has not followed yet) is
/// refused with 409 and the other process's change is kept: the form's digest is checked
/// against the settings as stored, inside the compare-and-set, not only against the copy in
/// force here.
#[test]
fn a_save_over_another_processs_newer_change_says_so_and_keeps_theirs() {
    let store = std::sync::Arc::new(call_result_webhook::MemoryStore::new());
    let bench = Bench::start_on(store.clone());
    configure(&bench, "http://127.0.0.1:9/ours");
    let page = bench.get(As::Admin, "/webhooks/settings");
    let other = call_result_webhook::Webhooks::builder()
        .store(store.clone())
        .policy(portal_support::policy())
        .build()
        .unwrap();
    other
        .update_preferences_blocking(
            &admin(),
            &ACCOUNT.into(),
            PreferencesUpdate::new().url("http://127.0.0.1:9/theirs"),
        )
        .unwrap();
    assert_eq!(
        url_of(&bench).as_deref(),
        Some("http://127.0.0.1:9/ours"),
        "this process has not followed the other's save (a memory store announces nothing)"
    );
    let fields = settings_fields(&page, &[("time_zone", "Europe/Paris")]);
    let refused = bench.post_form(As::Admin, "/webhooks/settings", &as_pairs(&fields));
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(refused.body.contains("Someone else saved these settings"));
    use call_result_webhook::store::Settings as _;
    let stored = store.load_account(&ACCOUNT.into()).unwrap().unwrap().json;
    assert!(stored.contains("/theirs"), "their URL is kept: {stored}");
    assert!(
        !stored.contains("Europe/Paris"),
        "nothing of the stale save: {stored}"
    );
    let other_again = call_result_webhook::Webhooks::builder()
        .store(store)
        .policy(portal_support::policy())
        .build()
        .unwrap();
    let account = other_again.account(&ACCOUNT.into()).unwrap();
    assert_eq!(
        account.preferences().url().map(|u| u.as_str()),
        Some("http://127.0.0.1:9/theirs")
    );
}

#[test]
fn deliveries_show_every_attempt_and_the_accounts_or_one_campaigns_counts() {
    let bench = Bench::start();
    let receiver = Receiver::start(&[(400, "bad")]);
    configure(&bench, &receiver.url);
    let id = submit(&bench, "winter");
    wait_for_dead_letters(&bench, 1);
    let all = bench.get(As::Admin, "/webhooks/api/deliveries").json();
    assert_eq!(all["status"]["stats"]["failed"], 1);
    assert_eq!(all["dead_letters"][0]["id"], id.as_str());
    let spring = bench
        .get(As::Admin, "/webhooks/api/deliveries?campaign=spring")
        .json();
    assert_eq!(spring["status"]["stats"]["failed"], 0);
    assert_eq!(spring["dead_letters"].as_array().unwrap().len(), 0);
    let page = bench.get(As::Admin, "/webhooks/deliveries?campaign=winter");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<option value=\"winter\" selected>"));
    assert!(page.body.contains("1 dead letters"));
    let viewer = bench.get(As::Viewer, "/webhooks/api/deliveries").json();
    assert!(viewer["dead_letters"].is_null());
    assert_eq!(viewer["status"]["stats"]["failed"], 1);

    // The attempts log, for the viewer too: the one attempt, its answer as the receiver sent it.
    let attempts = viewer["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{viewer}");
    let a = &attempts[0];
    assert_eq!(a["webhook_id"], id.as_str());
    assert_eq!(a["campaign"], "winter");
    assert_eq!(a["attempt"], 1);
    assert_eq!(a["state"], "failed");
    assert_eq!(a["status"], 400);
    assert_eq!(a["answer"], "bad");
    assert!(a["outcome"].as_str().unwrap().contains("400"), "{a}");
    assert!(a["duration_ms"].is_u64());
    assert!(viewer["next"].is_null());
    let before = a["cursor"].as_str().unwrap();
    let older = bench
        .get(
            As::Admin,
            &format!("/webhooks/api/deliveries?before={before}"),
        )
        .json();
    assert_eq!(older["attempts"].as_array().unwrap().len(), 0);
    let delivered = bench
        .get(As::Admin, "/webhooks/api/deliveries?state=delivered")
        .json();
    assert_eq!(delivered["attempts"].as_array().unwrap().len(), 0);
    let page = bench.get(As::Admin, "/webhooks/deliveries");
    assert!(
        page.body.contains("<table id=\"attempts\">"),
        "{}",
        page.body
    );
    // A query the screen cannot read is refused, with the reason.
    for bad in ["state=pending", "before=x", "before=-1"] {
        let refused = bench.get(As::Admin, &format!("/webhooks/api/deliveries?{bad}"));
        assert_eq!(refused.status, 400, "{bad}");
        assert!(refused.json()["error"].is_string());
        let page = bench.get(As::Admin, &format!("/webhooks/deliveries?{bad}"));
        assert_eq!(page.status, 400, "{bad}");
    }
}
