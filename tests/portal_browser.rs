//! The portal as a person uses it: in headless Chromium (through chromedriver, see
//! `browser_support`), against the portal mounted in an axum application on 127.0.0.1 behind
//! a toy login, a `Webhooks` on a `MemoryStore` with its worker delivering, and real receivers
//! on 127.0.0.1 that record what they get.
//!
//! The toy login stands in for the dialer's: `GET /login/admin` or `GET /login/viewer` opens a
//! session (a random id in a cookie, `HttpOnly; SameSite=Strict`) for alice, a full
//! administrator, or victor, who is not; a middleware turns the cookie into the portal's
//! `PortalUser` for account `acme`.
//!
//! With `CALL_RESULT_WEBHOOK_SCREENSHOTS=1`, `screenshots_of_the_screens` saves the screens to
//! `examples/screenshots/*.png` (the README shows them); without it, it only checks that they
//! render.
//!
//! Without chromium and chromedriver each test says plainly that it did not run and passes;
//! with `CALL_RESULT_WEBHOOK_REQUIRE_BROWSER=1` (set by `.ci/run`) it fails instead.
#![cfg(feature = "portal")]

mod browser_support;
mod support;

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use browser_support::Browser;
use call_result_webhook::portal::{self, PortalOptions, PortalUser};
use call_result_webhook::store::DeliveryFilter;
use call_result_webhook::{
    AccountId, CampaignId, DeliveryId, HyperDispatcher, MemoryStore, PreferencesUpdate, Principal,
    Webhooks, Worker,
};
use support::{Receiver, Recorded, Reply, admin, call, loopback_policy};

const TEST: &str = "tests/portal_browser.rs";
/// How long a page may take to answer a form.
const WAIT: Duration = Duration::from_secs(10);
const SCREENSHOTS: &str = "CALL_RESULT_WEBHOOK_SCREENSHOTS";
const ACCOUNT: &str = "acme";
/// Why the portal refuses a viewer's change.
const PERMISSION: &str = "needs full administrative permissions";
/// What a hostile receiver answers: markup whose script sets `window.__pwned` if it runs.
const HOSTILE: &str = "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>";

/// Who a toy login session is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Admin,
    Viewer,
}

type Sessions = Arc<Mutex<HashMap<String, Role>>>;

/// The dialer's application in miniature: a toy login and the portal under `/webhooks`, on
/// 127.0.0.1, with the `Webhooks` behind it and its worker.
struct App {
    addr: SocketAddr,
    webhooks: Webhooks,
    worker: Option<Worker>,
    runtime: tokio::runtime::Runtime,
}

impl App {
    fn start() -> App {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let webhooks = Webhooks::builder()
            .store(MemoryStore::new())
            .policy(loopback_policy())
            .build()
            .expect("webhooks");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a port");
        let addr = listener.local_addr().expect("its address");
        let sessions: Sessions = Arc::default();
        let (app, worker) = {
            let _entered = runtime.enter();
            let options = PortalOptions::new()
                .expect("options")
                .send_test(HyperDispatcher::new());
            let portal = portal::router(webhooks.clone(), options).expect("the portal");
            let app = Router::new()
                .route("/login/{who}", get(login))
                .with_state(sessions.clone())
                .nest("/webhooks", portal)
                .layer(axum::middleware::from_fn_with_state(sessions, signed_in));
            let worker = webhooks
                .start_tokio(HyperDispatcher::new(), runtime.handle())
                .expect("a worker");
            (app, worker)
        };
        runtime.spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        App {
            addr,
            webhooks,
            worker: Some(worker),
            runtime,
        }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Signs `browser` in as `role` (the login lands on Settings > Preferences > WebHook).
    fn sign_in(&self, browser: &Browser, role: Role) {
        let who = match role {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        };
        browser.goto(&self.url(&format!("/login/{who}")));
        assert!(
            browser.current_url().ends_with("/webhooks/settings"),
            "the login lands on the settings: {}",
            browser.current_url()
        );
    }

    /// The administrator switches `acme` on, sending to `url` with Basic `user`:`password`,
    /// and turns `campaign` on.
    fn configure(&self, url: &str, user: &str, password: &str, campaign: &str) {
        self.webhooks
            .update_preferences_blocking(
                &admin(),
                &acme(),
                PreferencesUpdate::new()
                    .enabled(true)
                    .url(url)
                    .credentials(user, password),
            )
            .expect("preferences");
        self.campaign(campaign, true);
    }

    fn campaign(&self, campaign: &str, on: bool) {
        self.webhooks
            .set_campaign_webhook_blocking(&admin(), &acme(), &campaign.into(), on)
            .expect("campaign switch");
    }

    /// Submits a call result for `campaign`; its id if it was accepted.
    fn submit(&self, campaign: &str, reference: &str) -> Option<DeliveryId> {
        self.webhooks
            .submit_blocking(&acme(), &campaign.into(), call(reference))
            .expect("submit")
            .id()
            .cloned()
    }

    /// The account's dead letters' ids.
    fn dead_letters(&self) -> Vec<DeliveryId> {
        self.webhooks
            .dead_letters_blocking(&admin(), &DeliveryFilter::account(ACCOUNT), 100)
            .expect("dead letters")
            .into_iter()
            .map(|d| d.id)
            .collect()
    }

    /// The URL and user name `acme` has in force.
    fn url_and_user(&self) -> (Option<String>, Option<String>) {
        let account = self.webhooks.account(&acme());
        let prefs = account.as_ref().map(|a| a.preferences());
        (
            prefs.and_then(|p| p.url()).map(|u| u.as_str().to_owned()),
            prefs.and_then(|p| p.username()).map(str::to_owned),
        )
    }

    /// How many changes `acme`'s audit log records.
    fn audited(&self) -> usize {
        self.webhooks
            .account(&acme())
            .map_or(0, |a| a.audit_log().len())
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            let _ = self
                .runtime
                .block_on(worker.shutdown(Duration::from_secs(5)));
        }
    }
}

fn acme() -> AccountId {
    ACCOUNT.into()
}

/// The toy login: a random session id in a cookie, remembered with its role.
async fn login(
    State(sessions): State<Sessions>,
    axum::extract::Path(who): axum::extract::Path<String>,
) -> Response {
    let role = match who.as_str() {
        "admin" => Role::Admin,
        "viewer" => Role::Viewer,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("random");
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    sessions.lock().unwrap().insert(id.clone(), role);
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!("session={id}; HttpOnly; SameSite=Strict; Path=/"),
            ),
            (header::LOCATION, "/webhooks/settings".to_owned()),
        ],
    )
        .into_response()
}

/// The dialer's authentication middleware in miniature: the session cookie becomes the
/// portal's `PortalUser` (no cookie, or an unknown one: no user, and the portal answers 401).
async fn signed_in(State(sessions): State<Sessions>, mut request: Request, next: Next) -> Response {
    let session = request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("session=").map(str::to_owned));
    let role = session
        .as_ref()
        .and_then(|s| sessions.lock().unwrap().get(s).copied());
    if let (Some(session), Some(role)) = (session, role) {
        let principal = match role {
            Role::Admin => Principal::administrator("alice"),
            Role::Viewer => Principal::user("victor"),
        };
        let campaigns: [CampaignId; 2] = ["winter".into(), "spring".into()];
        request
            .extensions_mut()
            .insert(PortalUser::new(principal, ACCOUNT, session).campaigns(campaigns));
    }
    next.run(request).await
}

/// Waits up to `timeout` for `done`.
fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `Basic base64(user:password)`.
fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A form posted by hand (no browser) to the app: its status and body.
fn post_form(
    addr: SocketAddr,
    path: &str,
    cookie: &str,
    origin: &str,
    fields: &[(&str, &str)],
) -> (u16, String) {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
         content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\
         cookie: {cookie}\r\norigin: {origin}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, answer)
}

/// The row of the table whose first cell is `first`.
fn row<'b>(browser: &'b Browser, first: &str) -> browser_support::Element<'b> {
    browser
        .find_all("tbody tr")
        .into_iter()
        .find(|tr| tr.try_find("td").is_some_and(|td| td.text() == first))
        .unwrap_or_else(|| panic!("no row for {first:?} in:\n{}", browser.body_text()))
}

/// What the receiver got after the first `skip` requests, waiting up to 10 s for `n` more.
fn next_requests(receiver: &Receiver, skip: usize, n: usize) -> Vec<Recorded> {
    receiver.wait_for(skip + n, Duration::from_secs(10))[skip..].to_vec()
}

/// The harness's own check: on a page with no protection at all (no escaping, no
/// Content-Security-Policy), the planted script runs and `script_ran` says so. Without this
/// the "no script ran" checks below could pass because they cannot see a script run.
#[test]
fn the_script_detector_sees_a_script_that_runs() {
    let Some(browser) = Browser::start(TEST) else {
        return;
    };
    let page = Receiver::start();
    page.set_default(
        Reply::ok()
            .header("content-type", "text/html; charset=utf-8")
            .body(format!(
                "<!doctype html><title>unprotected</title>{HOSTILE}"
            )),
    );
    browser.goto(&page.url_for("/unprotected"));
    assert_eq!(browser.title(), "unprotected");
    let ran = browser.script_ran("__pwned", Duration::from_secs(5));
    assert!(ran.is_some(), "the planted script ran but was not seen");
}

/// What the page's own Content-Security-Policy lets run: a script element added to the page,
/// and an inline event handler, each setting `window.__pwned`.
const INJECT: &str = "const s = document.createElement('script'); \
    s.textContent = 'window.__pwned = \"script element\"'; document.body.appendChild(s); \
    const d = document.createElement('div'); \
    d.innerHTML = '<img src=x onerror=\"window.__pwned = \\'inline handler\\'\">'; \
    document.body.appendChild(d);";

/// The Content-Security-Policy holds on every screen, in the browser: markup that got into the
/// page anyway (a script element, an inline event handler) does not run, while on a page
/// without the policy the same markup does; and the portal's own stylesheet, admitted by its
/// hash, applies.
#[test]
fn the_content_security_policy_stops_inline_script_and_admits_the_stylesheet() {
    let Some(browser) = Browser::start(TEST) else {
        return;
    };
    let app = App::start();
    let receiver = Receiver::start();
    app.configure(&receiver.url_for("/hook"), "dialer", "s3cret", "winter");

    // The control: no policy, and the injected markup runs.
    let bare = Receiver::start();
    bare.set_default(
        Reply::ok()
            .header("content-type", "text/html; charset=utf-8")
            .body("<!doctype html><title>bare</title><p>no policy</p>"),
    );
    browser.goto(&bare.url_for("/bare"));
    browser.execute(INJECT, vec![]);
    assert!(
        browser
            .script_ran("__pwned", Duration::from_secs(5))
            .is_some(),
        "without a policy the injected markup should run"
    );

    app.sign_in(&browser, Role::Admin);
    for screen in ["settings", "campaigns", "deliveries", "dead-letters"] {
        browser.goto(&app.url(&format!("/webhooks/{screen}")));
        let header = browser.execute(
            "return getComputedStyle(document.querySelector('header')).backgroundColor;",
            vec![],
        );
        assert_eq!(
            header, "rgb(29, 53, 87)",
            "the stylesheet does not apply on {screen}"
        );
        browser.execute(INJECT, vec![]);
        assert_eq!(
            browser.script_ran("__pwned", Duration::from_secs(1)),
            None,
            "on {screen}"
        );
    }
}

/// An administrator changes the URL and the credentials on Settings > Preferences > WebHook;
/// the next delivery goes to the new URL with the new Authorization, and none to the old one.
#[test]
fn an_administrator_changes_url_and_credentials_and_the_next_delivery_goes_there() {
    let Some(browser) = Browser::start(TEST) else {
        return;
    };
    let app = App::start();
    let old = Receiver::start();
    let new = Receiver::start();
    app.configure(&old.url_for("/old"), "olduser", "old-pass", "winter");

    app.sign_in(&browser, Role::Admin);
    assert_eq!(
        browser.find("h1").text(),
        "Settings > Preferences > WebHook"
    );
    assert_eq!(browser.find("#url").value(), old.url_for("/old"));
    assert_eq!(browser.find("#username").value(), "olduser");
    // The stored password is never sent to the browser.
    assert_eq!(browser.find("#password").value(), "");
    assert!(!browser.source().contains("old-pass"));
    let save = browser.find("form[action=settings] button[type=submit]");
    assert_eq!(save.text(), "Save");
    assert!(save.is_enabled());

    browser.fill("#url", &new.url_for("/new-hook"));
    browser.fill("#username", "newuser");
    browser.fill("#password", "n3w-s3cret");
    save.click();

    browser.wait_for_text("p.notice", WAIT, |t| t == "Saved.");
    assert_eq!(browser.find("#url").value(), new.url_for("/new-hook"));
    assert_eq!(browser.find("#username").value(), "newuser");
    assert_eq!(browser.find("#password").value(), "");
    assert!(!browser.source().contains("n3w-s3cret"));
    assert_eq!(
        app.url_and_user(),
        (Some(new.url_for("/new-hook")), Some("newuser".to_owned()))
    );

    let id = app.submit("winter", "after-the-save").expect("accepted");
    let got = next_requests(&new, 0, 1);
    assert_eq!(got[0].target, "/new-hook");
    assert_eq!(got[0].header("webhook-id"), Some(id.as_str()));
    assert_eq!(
        got[0].header("authorization"),
        Some(basic("newuser", "n3w-s3cret").as_str())
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(old.requests().is_empty(), "the old URL was sent to");
}

/// A URL the policy refuses, typed on Settings > Preferences > WebHook: nothing is saved, the
/// policy's reason shows beside the field (and is the field's accessible description), and the
/// field keeps what was typed.
#[test]
fn a_url_the_policy_refuses_is_refused_beside_the_field() {
    let Some(browser) = Browser::start(TEST) else {
        return;
    };
    let app = App::start();
    let receiver = Receiver::start();
    let original = receiver.url_for("/hook");
    app.configure(&original, "dialer", "s3cret", "winter");
    let audited = app.audited();

    app.sign_in(&browser, Role::Admin);
    for (refused, reason) in [
        ("ftp://127.0.0.1/hook", "scheme `ftp` is not allowed"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
    ] {
        browser.fill("#url", refused);
        browser
            .find("form[action=settings] button[type=submit]")
            .click();
        browser.wait_for_text("#url-error", WAIT, |t| t.contains(reason));
        assert_eq!(browser.find("#url").value(), refused);
        assert_eq!(
            browser.find("#url").attr("aria-describedby").as_deref(),
            Some("url-error")
        );
        assert_eq!(app.url_and_user().0, Some(original.clone()));
        assert_eq!(app.audited(), audited);
        browser.goto(&app.url("/webhooks/settings"));
    }
}

/// A save over someone else's newer change: the administrator's page was loaded, then someone
/// else saved another URL; the page's Save is refused and says so, their change stays, and the
/// form shows it.
#[test]
fn a_save_over_someone_elses_newer_change_says_so_and_keeps_theirs() {
    let Some(browser) = Browser::start(TEST) else {
        return;
    };
    let app = App::start();
    let receiver = Receiver::start();
    app.configure(&receiver.url_for("/first"), "dialer", "s3cret", "winter");

    app.sign_in(&browser, Role::Admin);
    browser.fill("#url", &receiver.url_for("/mine"));
    // Meanwhile, someone else saves.
    app.webhooks
        .update_preferences_blocking(
            &Principal::administrator("bob"),
            &acme(),
            PreferencesUpdate::new().url(&receiver.url_for("/theirs")),
        )
        .expect("bob's save");
    browser
        .find("form[action=settings] button[type=submit]")
        .click();

    browser.wait_for_text("p.problem", WAIT, |t| {
        t.starts_with("Someone else saved these settings")
    });
    assert_eq!(app.url_and_user().0, Some(receiver.url_for("/theirs")));
    assert_eq!(browser.find("#url").value(), receiver.url_for("/theirs"));
    assert!(
        browser.body_text().contains("bob"),
        "the change log names bob"
    );
}

/// A viewer sees the settings read-only with no enabled Save; a change forged with the viewer's
/// own cookie (a POST by hand with the cookie read from the browser, the portal's own `Origin`
/// and the viewer's CSRF token) is refused for want of permission and changes nothing.
#[test]
fn a_viewer_cannot_save_and_a_forged_post_changes_nothing() {
    let Some(browser) = Browser::start(TEST) else {
        return;
    };
    let app = App::start();
    let receiver = Receiver::start();
    let original = receiver.url_for("/hook");
    app.configure(&original, "dialer", "s3cret", "winter");
    let audited = app.audited();

    app.sign_in(&browser, Role::Viewer);
    assert!(
        browser.body_text().contains("Read only"),
        "the viewer is told the page is read-only"
    );
    assert_eq!(browser.find("#url").value(), original);
    assert!(!browser.find("#url").is_enabled(), "the URL is editable");
    assert!(
        browser
            .find_all("button")
            .iter()
            .all(|b| b.text() != "Save" || !b.is_enabled()),
        "the viewer has an enabled Save"
    );
    assert!(browser.try_find("input[name=csrf]").is_none());

    let token = viewer_token(&browser, &app);

    // By hand, with the viewer's cookie (read from the browser) and the portal's own origin.
    let cookie = browser.cookie("session").expect("the session cookie");
    assert!(cookie.http_only && cookie.same_site.as_deref() == Some("Strict"));
    let (status, answer) = post_form(
        app.addr,
        "/webhooks/settings",
        &format!("session={}", cookie.value),
        &app.url(""),
        &[
            ("csrf", token.as_str()),
            ("enabled", "on"),
            ("url", receiver.url_for("/forged-by-hand").as_str()),
            ("username", "mallory"),
            ("password", "stolen"),
        ],
    );
    assert_eq!(status, 403);
    assert!(answer.contains(PERMISSION), "{answer}");
    let (status, answer) = post_form(
        app.addr,
        "/webhooks/campaign-webhook",
        &format!("session={}", cookie.value),
        &app.url(""),
        &[("csrf", token.as_str()), ("campaign", "winter")],
    );
    assert_eq!(status, 403);
    assert!(answer.contains(PERMISSION), "{answer}");

    // Nothing changed: read back from the crate, and as the administrator sees it.
    assert_eq!(
        app.url_and_user(),
        (Some(original.clone()), Some("dialer".to_owned()))
    );
    assert_eq!(app.audited(), audited, "a refused change was audited");
    assert!(
        app.webhooks
            .account(&acme())
            .expect("saved")
            .campaign_webhook_enabled(&"winter".into())
    );
    browser.delete_cookies();
    app.sign_in(&browser, Role::Admin);
    assert_eq!(browser.find("#url").value(), original);
    assert_eq!(browser.find("#username").value(), "dialer");
}

/// The CSRF token of the browser's session, as the JSON API gives it (a viewer's session has
/// one too): a forgery with it passes the CSRF and Origin checks and meets the permission check.
fn viewer_token(browser: &Browser, app: &App) -> String {
    browser.goto(&app.url("/webhooks/api/session"));
    let session: serde_json::Value =
        serde_json::from_str(&browser.body_text()).expect("the session as JSON");
    assert_eq!(session["administrator"], false);
    session["csrf_token"]
        .as_str()
        .expect("a CSRF token")
        .to_owned()
}

/// A viewer who re-enables the disabled form in the browser, adds the session's CSRF token,
/// types a new URL and submits: refused for want of permission (the Origin and token were
/// right), and nothing changes.
#[test]
fn a_viewer_who_reenables_the_form_in_the_browser_cannot_save() {
    let Some(browser) = Browser::start(TEST) else {
        return;
    };
    let app = App::start();
    let receiver = Receiver::start();
    let original = receiver.url_for("/hook");
    app.configure(&original, "dialer", "s3cret", "winter");
    let audited = app.audited();
    app.sign_in(&browser, Role::Viewer);
    let token = viewer_token(&browser, &app);

    // In the browser: the disabled form enabled, a token added, a new URL typed, submitted.
    browser.goto(&app.url("/webhooks/settings"));
    browser.execute(
        "const form = document.querySelector('form[action=settings]');\
         form.querySelectorAll('fieldset').forEach(f => f.disabled = false);\
         form.querySelector('#url').value = arguments[0];\
         const csrf = document.createElement('input');\
         csrf.type = 'hidden'; csrf.name = 'csrf'; csrf.value = arguments[1];\
         form.appendChild(csrf);\
         form.submit();",
        vec![
            serde_json::json!(receiver.url_for("/forged")),
            serde_json::json!(token),
        ],
    );
    // Refused for the permission, the last check: the Origin and the token were right.
    browser.wait_for_text("p.problem", WAIT, |t| t.contains(PERMISSION));
    assert!(
        browser.title().starts_with("Forbidden"),
        "{}",
        browser.title()
    );

    assert_eq!(
        app.url_and_user(),
        (Some(original), Some("dialer".to_owned()))
    );
    assert_eq!(app.audited(), audited, "a refused change was audited");
}

/// A page on another origin (another port of 127.0.0.1: the same site, so the browser sends
/// the administrator's `SameSite=Strict` cookie with it) whose form posts to the portal, as a
/// cross-site request forgery would: refused, and nothing changes.
#[test]
fn a_form_on_another_origin_cannot_change_the_settings() {
    let Some(browser) = Browser::start(TEST) else {
        return;
    };
    let app = App::start();
    let receiver = Receiver::start();
    let original = receiver.url_for("/hook");
    app.configure(&original, "dialer", "s3cret", "winter");
    let audited = app.audited();
    app.sign_in(&browser, Role::Admin);

    let attacker = Receiver::start();
    attacker.set_default(
        Reply::ok()
            .header("content-type", "text/html; charset=utf-8")
            .body(format!(
                "<!doctype html><title>prize</title>\
                 <form method=post action=\"{}\">\
                 <input type=hidden name=enabled value=on>\
                 <input type=hidden name=url value=\"{}\">\
                 <button id=win>Claim your prize</button></form>",
                app.url("/webhooks/settings"),
                attacker.url_for("/stolen")
            )),
    );
    browser.goto(&attacker.url_for("/prize"));
    browser.find("#win").click();
    let refused = browser.wait_for_text("p.problem", WAIT, |t| !t.is_empty());
    assert!(browser.title().starts_with("Forbidden"), "{refused}");
    assert_eq!(app.url_and_user().0, Some(original));
    assert_eq!(app.audited(), audited);
}

/// On Campaign Management, unticking a campaign's "Enable WebHook" (its Additional Settings)
/// and saving changes its icon's accessible name from Active to Off, and its next call result
/// is not sent.
#[test]
fn switching_a_campaign_off_names_its_icon_off_and_its_next_result_is_not_sent() {
    let Some(browser) = Browser::start(TEST) else {
        return;
    };
    let app = App::start();
    let receiver = Receiver::start();
    app.configure(&receiver.url_for("/hook"), "dialer", "s3cret", "winter");
    app.submit("winter", "before").expect("accepted");
    next_requests(&receiver, 0, 1);

    app.sign_in(&browser, Role::Admin);
    browser.goto(&app.url("/webhooks/campaigns"));
    assert_eq!(browser.find("h1").text(), "Campaign Management");
    let winter = row(&browser, "winter");
    let icon = winter.find("svg[role=img]");
    assert_eq!(icon.accessible_name(), "Active");
    let switch = winter.find("input[type=checkbox][name=enabled]");
    assert!(switch.is_selected());
    let label = winter.find("label");
    assert_eq!(label.text(), "Enable WebHook");
    switch.click();
    assert!(!switch.is_selected());
    winter.find("button[type=submit]").click();

    browser.wait_for_text("p.notice", WAIT, |t| t == "Saved.");
    let winter = row(&browser, "winter");
    assert_eq!(winter.find("svg[role=img]").accessible_name(), "Off");
    assert!(
        !winter
            .find("input[type=checkbox][name=enabled]")
            .is_selected()
    );
    assert!(
        !app.webhooks
            .account(&acme())
            .expect("saved")
            .campaign_webhook_enabled(&"winter".into())
    );

    assert_eq!(app.submit("winter", "after"), None, "accepted while off");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.requests().len(), 1, "a result was sent while off");
}

/// A dead letter (the receiver refused it with 400) replayed from the Dead letters screen is
/// delivered again with the same webhook-id and the same body.
#[test]
fn a_dead_letter_replayed_from_the_page_is_delivered_with_the_same_id() {
    let Some(browser) = Browser::start(TEST) else {
        return;
    };
    let app = App::start();
    let receiver = Receiver::start();
    app.configure(&receiver.url_for("/hook"), "dialer", "s3cret", "winter");
    receiver.script([Reply::status(400).body("no such customer")]);
    let id = app.submit("winter", "refused-once").expect("accepted");
    let first = next_requests(&receiver, 0, 1).remove(0);
    wait_until("the dead letter", Duration::from_secs(10), || {
        app.dead_letters().contains(&id)
    });

    app.sign_in(&browser, Role::Admin);
    browser.goto(&app.url("/webhooks/dead-letters"));
    assert_eq!(browser.find("h1").text(), "Dead letters");
    let letter = row(&browser, id.as_str());
    assert!(letter.text().contains("winter"), "{}", letter.text());
    let replay = letter.find("form[action=replay] button[type=submit]");
    assert_eq!(replay.text(), "Replay");
    replay.click();

    browser.wait_for_text("p.notice", WAIT, |t| t.starts_with("Replayed"));
    let again = next_requests(&receiver, 1, 1).remove(0);
    assert_eq!(again.header("webhook-id"), Some(id.as_str()));
    assert_eq!(again.body, first.body, "the replay's body differs");
    wait_until("the dead letter gone", Duration::from_secs(10), || {
        app.dead_letters().is_empty()
    });
    browser.goto(&app.url("/webhooks/dead-letters"));
    assert!(browser.body_text().contains("No dead letter."));
}

/// A receiver answering markup with a script: "Send test" shows its answer as text (and the
/// webhook-id it sent), and the script does not run.
#[test]
fn the_script_in_a_receivers_answer_does_not_run() {
    let Some(browser) = Browser::start(TEST) else {
        return;
    };
    let app = App::start();
    let receiver = Receiver::start();
    receiver.set_default(
        Reply::ok()
            .header("content-type", "text/html; charset=utf-8")
            .body(HOSTILE),
    );
    app.configure(&receiver.url_for("/hook"), "dialer", "s3cret", "winter");

    app.sign_in(&browser, Role::Admin);
    browser.goto(&app.url("/webhooks/dead-letters"));
    let send = browser.find("form[action=send-test] button[type=submit]");
    assert_eq!(send.text(), "Send test");
    send.click();

    let answer = browser.wait_for("#send-test-answer", Duration::from_secs(15));
    let sent = next_requests(&receiver, 0, 1).remove(0);
    let id = sent.header("webhook-id").expect("a webhook-id");
    assert!(answer.text().contains(id), "{}", answer.text());
    assert!(answer.text().contains("200"), "{}", answer.text());
    assert_eq!(answer.find("pre").text(), HOSTILE, "not shown as text");
    assert!(
        browser.find_all("img").is_empty() && answer.find_all("script").is_empty(),
        "the answer became markup"
    );
    assert_eq!(browser.script_ran("__pwned", Duration::from_secs(2)), None);
}

/// A campaign named with markup (campaign ids are the dialer's, and may hold any printable
/// character) shows as text on Campaign Management, Deliveries and Dead letters, and its
/// script does not run.
#[test]
fn a_campaign_named_with_markup_shows_as_text_and_runs_no_script() {
    let Some(browser) = Browser::start(TEST) else {
        return;
    };
    let app = App::start();
    let receiver = Receiver::start();
    let hostile = "<img src=x onerror=\"window.__pwned=3\">";
    app.configure(&receiver.url_for("/hook"), "dialer", "s3cret", hostile);
    receiver.script([Reply::status(400)]);
    let id = app.submit(hostile, "refused").expect("accepted");
    wait_until("the dead letter", Duration::from_secs(10), || {
        app.dead_letters().contains(&id)
    });

    app.sign_in(&browser, Role::Admin);
    for screen in ["campaigns", "deliveries", "dead-letters"] {
        browser.goto(&app.url(&format!("/webhooks/{screen}")));
        let shown = match screen {
            "dead-letters" => row(&browser, id.as_str())
                .find_all("td")
                .into_iter()
                .nth(1)
                .expect("a campaign cell")
                .text(),
            "deliveries" => browser
                .find("#attempts tbody tr")
                .find_all("td")
                .into_iter()
                .nth(2)
                .expect("a campaign cell")
                .text(),
            _ => row(&browser, hostile).find("td").text(),
        };
        assert_eq!(shown, hostile, "on {screen}");
        assert!(
            browser.find_all("img").is_empty(),
            "the campaign name became markup on {screen}"
        );
        assert_eq!(
            browser.script_ran("__pwned", Duration::from_secs(1)),
            None,
            "on {screen}"
        );
    }
}

/// An endpoint paused by a 410 shows as paused with a "Resume" button; resumed from the page,
/// the delivery that waited is sent. A dead letter removed from the page is gone.
#[test]
fn resume_and_remove_from_the_page() {
    let Some(browser) = Browser::start(TEST) else {
        return;
    };
    let app = App::start();
    let receiver = Receiver::start();
    app.configure(&receiver.url_for("/hook"), "dialer", "s3cret", "winter");
    receiver.script([Reply::status(400), Reply::status(410)]);
    let dead = app.submit("winter", "refused").expect("accepted");
    wait_until("the dead letter", Duration::from_secs(10), || {
        app.dead_letters().contains(&dead)
    });
    let waiting = app.submit("winter", "gone").expect("accepted");
    next_requests(&receiver, 0, 2);
    wait_until("the pause", Duration::from_secs(10), || {
        app.webhooks
            .status_blocking(&acme(), None)
            .expect("status")
            .endpoint
            .paused
            .is_some()
    });

    app.sign_in(&browser, Role::Admin);
    browser.goto(&app.url("/webhooks/campaigns"));
    assert_eq!(
        row(&browser, "winter")
            .find("svg[role=img]")
            .accessible_name(),
        "Paused"
    );
    browser.goto(&app.url("/webhooks/dead-letters"));
    assert!(browser.body_text().contains("The endpoint is paused"));
    let resume = browser.find("form[action=resume] button[type=submit]");
    assert_eq!(resume.text(), "Resume");
    resume.click();
    browser.wait_for_text("p.notice", WAIT, |t| t.starts_with("Resumed"));
    let sent = next_requests(&receiver, 2, 1).remove(0);
    assert_eq!(sent.header("webhook-id"), Some(waiting.as_str()));

    let letter = row(&browser, dead.as_str());
    let remove = letter.find("form[action=remove] button[type=submit]");
    assert_eq!(remove.text(), "Remove");
    remove.click();
    browser.wait_for_text("p.notice", WAIT, |t| t == "Removed.");
    assert!(app.dead_letters().is_empty());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(receiver.requests().len(), 3, "a removed delivery was sent");
}

/// The Deliveries screen: every attempt, newest first, 50 a page with a link to the older
/// ones; each row's time, webhook-id, campaign, attempt, state, outcome, duration and the start
/// of the receiver's answer, shown as text (a receiver's markup runs no script); the filter
/// form (a GET form) narrows the attempts and the counts to a campaign and a state.
#[test]
fn the_deliveries_screen_lists_every_attempt_with_paging_and_filters() {
    let Some(browser) = Browser::start(TEST) else {
        return;
    };
    let app = App::start();
    let receiver = Receiver::start();
    app.configure(&receiver.url_for("/hook"), "dialer", "s3cret", "winter");
    app.campaign("renewals", true);
    receiver.script([Reply::status(422).body(HOSTILE)]);
    receiver.set_default(Reply::ok().body("ok"));
    let dead = app.submit("renewals", "refused").expect("accepted");
    wait_until("the dead letter", Duration::from_secs(10), || {
        app.dead_letters().contains(&dead)
    });
    let mut winter = Vec::new();
    for n in 0..55 {
        winter.push(app.submit("winter", &format!("w{n}")).expect("accepted"));
    }
    next_requests(&receiver, 1, 55);
    wait_until("55 delivered", Duration::from_secs(20), || {
        app.webhooks
            .status_blocking(&acme(), None)
            .expect("status")
            .stats
            .delivered
            == 55
    });

    app.sign_in(&browser, Role::Admin);
    browser.goto(&app.url("/webhooks/deliveries"));
    assert_eq!(browser.find("h1").text(), "Deliveries");
    let headings: Vec<String> = browser
        .find_all("#attempts thead th")
        .iter()
        .map(|th| th.text())
        .collect();
    assert_eq!(
        headings,
        [
            "Time",
            "webhook-id",
            "Campaign",
            "Attempt",
            "State",
            "Outcome",
            "Duration",
            "Answer"
        ]
    );
    let rows = |browser: &Browser| -> Vec<Vec<String>> {
        browser
            .find_all("#attempts tbody tr")
            .iter()
            .map(|tr| tr.find_all("td").iter().map(|td| td.text()).collect())
            .collect()
    };
    let cursors = |browser: &Browser| -> Vec<u64> {
        browser
            .find_all("#attempts tbody tr")
            .iter()
            .map(|tr| {
                tr.attr("data-cursor")
                    .expect("a cursor")
                    .parse()
                    .expect("a number")
            })
            .collect()
    };
    let first_page = rows(&browser);
    assert_eq!(first_page.len(), 50, "a page of 50");
    let first_cursors = cursors(&browser);
    assert!(
        first_cursors.windows(2).all(|w| w[0] > w[1]),
        "newest first"
    );
    let newest = &first_page[0];
    assert!(
        winter.iter().any(|id| id.as_str() == newest[1]),
        "{newest:?}"
    );
    assert_eq!(&newest[2..6], ["winter", "1", "Delivered", "HTTP 200"]);
    assert!(newest[6].ends_with(" ms"), "{newest:?}");
    assert_eq!(newest[7], "ok");
    assert!(browser.try_find("#newest").is_none());

    // The older page: the last five winter attempts and the refused one, oldest last.
    browser.find("#older").click();
    browser.wait_for_url(WAIT, |url| url.contains("before="));
    let older = rows(&browser);
    assert_eq!(older.len(), 6, "{older:?}");
    assert!(cursors(&browser)[0] < *first_cursors.last().unwrap());
    let refused = older.last().unwrap();
    assert_eq!(refused[1], dead.as_str());
    assert_eq!(&refused[2..5], ["renewals", "1", "Failed"]);
    assert!(refused[5].contains("422"), "{refused:?}");
    assert_eq!(refused[7], HOSTILE, "the receiver's answer, as text");
    assert!(
        browser.find_all("#attempts img").is_empty(),
        "the answer became markup"
    );
    assert_eq!(browser.script_ran("__pwned", Duration::from_secs(2)), None);
    assert!(
        browser.try_find("#older").is_none(),
        "no page after the last"
    );
    browser.find("#newest").click();
    browser.wait_for_url(WAIT, |url| url.ends_with("/webhooks/deliveries"));
    assert_eq!(rows(&browser).len(), 50);

    let summary = |browser: &Browser| -> (String, String) {
        let cell = |name: &str| {
            browser
                .find_all("main table")
                .first()
                .expect("the summary")
                .find_all("tr")
                .into_iter()
                .find(|tr| tr.find("th").text() == name)
                .unwrap_or_else(|| panic!("no {name} row"))
                .find("td")
                .text()
        };
        (cell("Delivered"), cell("Failed"))
    };
    assert_eq!(summary(&browser), ("55".to_owned(), "1".to_owned()));
    for (campaign, state, shown, delivered, failed, letters) in [
        ("renewals", "", 1, "0", "1", "1 dead letters"),
        ("", "failed", 1, "55", "1", "1 dead letters"),
        ("winter", "failed", 0, "55", "0", "0 dead letters"),
        ("winter", "delivered", 50, "55", "0", "0 dead letters"),
        ("", "", 50, "55", "1", "1 dead letters"),
    ] {
        browser
            .find(&format!("#campaign option[value=\"{campaign}\"]"))
            .click();
        browser
            .find(&format!("#state option[value=\"{state}\"]"))
            .click();
        browser
            .find("form[action=deliveries] button[type=submit]")
            .click();
        let query = format!("?campaign={campaign}&state={state}");
        browser.wait_for_url(WAIT, |url| url.ends_with(&query));
        let got = rows(&browser);
        assert_eq!(got.len(), shown, "{campaign:?} {state:?}: {got:?}");
        if !campaign.is_empty() {
            assert!(got.iter().all(|r| r[2] == campaign), "{got:?}");
        }
        if state == "failed" {
            assert!(got.iter().all(|r| r[4] == "Failed"), "{got:?}");
        }
        if shown == 0 {
            assert_eq!(browser.find("#no-attempts").text(), "No attempts to show.");
        }
        assert_eq!(
            summary(&browser),
            (delivered.to_owned(), failed.to_owned()),
            "{campaign:?} {state:?}"
        );
        assert!(
            browser.body_text().contains(letters),
            "{campaign:?}: {}",
            browser.body_text()
        );
    }
}

/// The password, a secret header's value, the signing secret and the Authorization value they
/// make appear in no screen and no JSON answer, for the administrator or the viewer; the
/// settings say which are set.
#[test]
fn no_secret_reaches_any_page_or_json_answer() {
    let Some(browser) = Browser::start(TEST) else {
        return;
    };
    let app = App::start();
    let receiver = Receiver::start();
    let signing = call_result_webhook::signing::SigningSecret::generate().expect("a secret");
    let whsec = signing.to_whsec();
    app.configure(
        &receiver.url_for("/hook"),
        "dialer",
        "pw-SECRET-1",
        "winter",
    );
    app.webhooks
        .update_preferences_blocking(
            &admin(),
            &acme(),
            PreferencesUpdate::new()
                .secret_header("X-Api-Secret", "hdr-SECRET-2")
                .signing_secret(signing),
        )
        .expect("preferences");
    let secrets = [
        "pw-SECRET-1".to_owned(),
        "hdr-SECRET-2".to_owned(),
        whsec.clone(),
        whsec.trim_start_matches("whsec_").to_owned(),
        basic("dialer", "pw-SECRET-1"),
        base64::engine::general_purpose::STANDARD.encode("dialer:pw-SECRET-1"),
    ];
    for role in [Role::Admin, Role::Viewer] {
        browser.delete_cookies();
        app.sign_in(&browser, role);
        assert!(
            browser
                .body_text()
                .contains("Password (set; leave empty to keep it)"),
            "{}",
            browser.body_text()
        );
        assert!(
            browser
                .body_text()
                .contains("A signing secret is set (never shown).")
        );
        for path in [
            "settings",
            "campaigns",
            "deliveries",
            "dead-letters",
            "api/session",
            "api/settings",
            "api/campaigns",
            "api/deliveries",
            "api/dead-letters",
        ] {
            browser.goto(&app.url(&format!("/webhooks/{path}")));
            let source = browser.source();
            for secret in &secrets {
                assert!(
                    !source.contains(secret.as_str()),
                    "{path} as {role:?} shows a secret"
                );
            }
        }
    }
}

/// An example's program, built by `cargo test` beside this test; `None` (after saying that
/// the test did not run) when it was not built, as with `cargo test --test portal_browser`.
fn example_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe
        .parent()?
        .parent()?
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        eprintln!(
            "{TEST}: examples/{name} was not built beside this test: this test DID NOT RUN \
             (`cargo test` builds the examples; `cargo test --test portal_browser` alone does \
             not: build them first)"
        );
        return None;
    }
    Some(path)
}

/// The example, a child of the test, killed when the test ends however it ends.
struct Example(std::process::Child);

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The compiled example (`examples/portal_axum.rs`, its origin configured) in the browser:
/// alice signs in on its login form, gets an `HttpOnly; SameSite=Strict` session cookie,
/// switches the webhook on with a URL and credentials, and "Send test" sends the page's sample
/// there with them; victor signs in and has no enabled Save.
#[test]
fn the_example_in_the_browser_signs_in_saves_and_sends_a_test() {
    let Some(browser) = Browser::start(TEST) else {
        return;
    };
    let Some(binary) = example_binary("portal_axum") else {
        return;
    };
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let _example = Example(
        std::process::Command::new(binary)
            .arg(addr.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the example"),
    );
    wait_until("the example to listen", WAIT, || {
        TcpStream::connect(addr).is_ok()
    });
    let receiver = Receiver::start();
    receiver.set_default(Reply::ok().body("thanks"));
    let sign_in = |user: &str| {
        browser.delete_cookies();
        browser.goto(&format!("http://{addr}/login"));
        browser
            .find(&format!("select[name=user] option[value={user}]"))
            .click();
        browser.fill("input[name=password]", "demo");
        browser.find("button[type=submit]").click();
        browser.wait_for_url(WAIT, |url| url.ends_with("/webhooks/settings"));
    };

    sign_in("alice");
    let cookie = browser.cookie("session").expect("the session cookie");
    assert!(cookie.http_only, "{cookie:?}");
    assert_eq!(cookie.same_site.as_deref(), Some("Strict"));
    let enable = browser.find("input[type=checkbox][name=enabled]");
    if !enable.is_selected() {
        enable.click();
    }
    browser.fill("#url", &receiver.url_for("/example-hook"));
    browser.fill("#username", "dialer");
    browser.fill("#password", "ex4mple-pw");
    browser
        .find("form[action=settings] button[type=submit]")
        .click();
    browser.wait_for_text("p.notice", WAIT, |t| t == "Saved.");
    assert_eq!(
        browser.find("#url").value(),
        receiver.url_for("/example-hook")
    );

    browser.goto(&format!("http://{addr}/webhooks/dead-letters"));
    browser
        .find("form[action=send-test] button[type=submit]")
        .click();
    let answer = browser.wait_for_text("#send-test-answer", WAIT, |t| !t.is_empty());
    let sent = next_requests(&receiver, 0, 1).remove(0);
    assert_eq!(sent.target, "/example-hook");
    assert_eq!(
        sent.header("authorization"),
        Some(basic("dialer", "ex4mple-pw").as_str())
    );
    let id = sent.header("webhook-id").expect("a webhook-id");
    assert!(answer.contains(id), "{answer}");
    assert_eq!(browser.find("#send-test-answer pre").text(), "thanks");

    sign_in("victor");
    assert!(browser.body_text().contains("Read only"));
    assert!(
        browser
            .find_all("button")
            .iter()
            .all(|b| b.text() != "Save" || !b.is_enabled()),
        "victor has an enabled Save"
    );
}

/// The `dialer` example with `--portal-addr`, in the browser: its administrator's link opens
/// Settings > Preferences > WebHook with an `HttpOnly; SameSite=Strict` session cookie, works
/// once only, and a URL and credentials changed there are what the dialer's next call result
/// is delivered to and with; its viewer's link opens the page read only.
#[cfg(all(feature = "hyper", feature = "sqlite"))]
#[test]
fn the_dialers_links_open_the_portal_and_its_next_delivery_follows_the_page() {
    use std::io::BufRead as _;

    let Some(browser) = Browser::start(TEST) else {
        return;
    };
    let Some(binary) = example_binary("dialer") else {
        return;
    };
    let old = Receiver::start();
    let new = Receiver::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut child = std::process::Command::new(binary)
        .arg("--store")
        .arg(dir.path().join("outbox.sqlite"))
        .args([
            "--url",
            &old.url_for("/old"),
            "--allow-http",
            "--allow-private",
        ])
        .args(["--username", "dialer", "--password", "old-pw"])
        .args(["--portal-addr", "127.0.0.1:0"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the dialer");
    let mut stdin = child.stdin.take().expect("its stdin");
    let stderr = child.stderr.take().expect("its stderr");
    let _dialer = Example(child);
    let (lines, links) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(link) = line.strip_prefix("portal: ") {
                let _ = lines.send(link.to_owned());
            }
        }
    });
    let link = |role: &str| {
        let line = links
            .recv_timeout(Duration::from_secs(30))
            .expect("the dialer printed its links");
        line.strip_prefix(&format!("{role} link "))
            .unwrap_or_else(|| panic!("not the {role} link: {line:?}"))
            .to_owned()
    };
    let (admin_link, viewer_link) = (link("administrator"), link("viewer"));

    browser.goto(&admin_link);
    browser.wait_for_url(WAIT, |url| url.ends_with("/webhooks/settings"));
    assert_eq!(
        browser.find("h1").text(),
        "Settings > Preferences > WebHook"
    );
    let cookies = browser.cookies();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert!(cookies[0].http_only, "{cookies:?}");
    assert_eq!(cookies[0].same_site.as_deref(), Some("Strict"));
    assert_eq!(browser.find("#url").value(), old.url_for("/old"));
    browser.fill("#url", &new.url_for("/new"));
    browser.fill("#username", "newuser");
    browser.fill("#password", "n3w-pw");
    browser
        .find("form[action=settings] button[type=submit]")
        .click();
    browser.wait_for_text("p.notice", WAIT, |t| t == "Saved.");

    writeln!(
        stdin,
        "{}",
        serde_json::json!({
            "CampaignName": "Winter Sale",
            "LogDateTime": "2019-06-19T16:11:07",
            "CallStart": "2019-06-20 01:01:00",
            "CallEnd": "2019-06-20 01:03:00",
            "PhoneCalled": "0731051xxx",
            "Reference": "after-the-page",
            "Result": "Connected",
            "ResultNotes": "",
            "WrapUpByName": "agent@pinetree.net.au",
            "WrapUpReasonName": "Payment Taken",
        })
    )
    .expect("a call result to the dialer");
    stdin.flush().expect("flush");
    let got = next_requests(&new, 0, 1).remove(0);
    assert_eq!(got.target, "/new");
    assert_eq!(
        got.header("authorization"),
        Some(basic("newuser", "n3w-pw").as_str())
    );
    assert!(
        got.text().contains("Reference=after-the-page"),
        "{}",
        got.text()
    );
    assert!(old.requests().is_empty(), "the old URL was sent to");

    // The administrator's link a second time, in a browser with no session: refused.
    browser.delete_cookies();
    browser.goto(&admin_link);
    assert!(
        browser.body_text().contains("already used"),
        "{}",
        browser.body_text()
    );
    assert!(browser.try_find("#url").is_none());
    assert!(browser.cookies().is_empty());

    browser.goto(&viewer_link);
    browser.wait_for_url(WAIT, |url| url.ends_with("/webhooks/settings"));
    assert!(browser.body_text().contains("Read only"));
    assert_eq!(browser.find("#url").value(), new.url_for("/new"));
    assert!(
        browser
            .find_all("button")
            .iter()
            .all(|b| b.text() != "Save" || !b.is_enabled()),
        "the viewer has an enabled Save"
    );
    drop(stdin);
}

/// The screens with something on them, saved to `examples/screenshots/` when
/// `CALL_RESULT_WEBHOOK_SCREENSHOTS=1`.
#[test]
fn screenshots_of_the_screens() {
    let Some(browser) = Browser::start(TEST) else {
        return;
    };
    let app = App::start();
    let receiver = Receiver::start();
    app.configure(
        &receiver.url_for("/hooks/calls"),
        "dialer",
        "s3cret",
        "winter",
    );
    app.campaign("renewals", true);
    // A dead letter first (the receiver refuses it), then deliveries that succeed, so the
    // endpoint is healthy again on the screens.
    receiver.script([Reply::status(422).body("{\"error\":\"unknown reference\"}")]);
    let id = app.submit("renewals", "r1").expect("accepted");
    next_requests(&receiver, 0, 1);
    wait_until("the dead letter", Duration::from_secs(10), || {
        app.dead_letters().contains(&id)
    });
    receiver.set_default(
        Reply::ok()
            .header("content-type", "application/json")
            .body("{\"received\":true}"),
    );
    for n in 0..3 {
        app.submit("winter", &format!("w{n}")).expect("accepted");
    }
    next_requests(&receiver, 1, 3);

    let save = std::env::var(SCREENSHOTS).is_ok_and(|v| v == "1");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/screenshots");
    app.sign_in(&browser, Role::Admin);
    for (screen, file, heading) in [
        (
            "settings",
            "settings.png",
            "Settings > Preferences > WebHook",
        ),
        ("campaigns", "campaigns.png", "Campaign Management"),
        ("deliveries", "deliveries.png", "Deliveries"),
        ("dead-letters", "dead-letters.png", "Dead letters"),
    ] {
        browser.goto(&app.url(&format!("/webhooks/{screen}")));
        if screen == "dead-letters" {
            // With a test sent, and the receiver's answer shown.
            browser
                .find("form[action=send-test] button[type=submit]")
                .click();
            browser.wait_for("#send-test-answer", Duration::from_secs(15));
        }
        assert_eq!(browser.find("h1").text(), heading);
        let png = browser.screenshot();
        assert!(png.len() > 1000, "an empty screenshot of {screen}");
        if save {
            browser.save_screenshot(&dir.join(file));
            eprintln!("{TEST}: saved {}", dir.join(file).display());
        }
    }
}
