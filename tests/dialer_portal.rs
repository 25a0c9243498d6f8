//! `dialer --portal-addr`: the administrator's portal served for the dialer's account, opened
//! through the two single-use links the dialer prints on stderr, spoken to over HTTP/1.1 from
//! std's `TcpStream` (`portal_support::exchange`).
//!
//! - The administrator's link sets a session cookie (`HttpOnly; SameSite=Strict; Path=/`, 8 hours) and
//!   redirects to Settings > Preferences > WebHook, which then loads with that cookie; the same
//!   link a second time is refused (403).
//! - The viewer's link opens the same page read only; a save posted by hand with the viewer's
//!   cookie, the portal's own `Origin` and the session's CSRF token is refused (403) and
//!   changes nothing, while the very same post with the administrator's session saves.
//! - No session (no cookie, or a made-up one): the portal's 401; an unknown link: 403.
//! - The tokens and session ids appear on stderr in the two link lines only.
//! - An address that cannot be listened on is a usage error (exit 2), before any input.
//!
//! The links' 10-minute validity is unit-tested in the example itself with an injected clock
//! (its `portal::tests`): the example's source is compiled into this test as a module, so that
//! those tests run here (`cargo test` builds an example as a program, not as a test, and the
//! other dialer tests run that program).
//!
//! Uses the dialer binary `cargo test` builds beside the test binary: after changing the
//! example, `cargo build --all-features --examples` before `cargo test --test dialer_portal`.
#![cfg(all(unix, feature = "hyper", feature = "sqlite", feature = "portal"))]

/// The example's source, for its unit tests (the links' expiry, single use, sessions).
#[allow(dead_code)]
#[path = "../examples/dialer.rs"]
mod dialer_example;
mod dialer_support;
mod portal_support;
// dialer_support's own dependency.
mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use dialer_support::dialer_binary;
use portal_support::{Answer, exchange};

/// Where the dialer delivers: nowhere (no call result is given), but a valid URL.
const URL: &str = "http://127.0.0.1:9/hook";
const SETTINGS: &str = "/webhooks/settings";

/// A dialer serving its portal, its input held open (so it keeps running), and what it said.
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    /// The paths of the two links: `/login/<token>`.
    admin_link: String,
    viewer_link: String,
    /// The two lines as printed.
    link_lines: [String; 2],
    stderr: Option<JoinHandle<String>>,
}

impl Running {
    fn start() -> Running {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("outbox.sqlite");
        let mut child = Command::new(dialer_binary())
            .arg("--store")
            .arg(&store)
            .args(["--url", URL, "--allow-http", "--allow-private"])
            .args(["--username", "dialer", "--password", "pw-SECRET-7"])
            .args(["--portal-addr", "127.0.0.1:0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the dialer");
        let stdin = child.stdin.take();
        // Every line, the two links handed over as they come.
        let (links, found) = mpsc::channel::<String>();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            let mut line = String::new();
            while matches!(stderr.read_line(&mut line), Ok(n) if n > 0) {
                if line.starts_with("portal: ") {
                    let _ = links.send(line.trim_end().to_owned());
                }
                all.push_str(&line);
                line.clear();
            }
            all
        });
        let next = || {
            found
                .recv_timeout(Duration::from_secs(30))
                .expect("the dialer printed its portal links")
        };
        let (admin_line, viewer_line) = (next(), next());
        let admin = admin_line
            .strip_prefix("portal: administrator link http://")
            .unwrap_or_else(|| panic!("not the administrator's link: {admin_line:?}"));
        let viewer = viewer_line
            .strip_prefix("portal: viewer link http://")
            .unwrap_or_else(|| panic!("not the viewer's link: {viewer_line:?}"));
        let split = |rest: &str| {
            let (addr, path) = rest.split_at(rest.find('/').expect("a path"));
            (
                addr.parse::<SocketAddr>().expect("an address"),
                path.to_owned(),
            )
        };
        let (addr, admin_link) = split(admin);
        let (viewer_addr, viewer_link) = split(viewer);
        assert_eq!(addr, viewer_addr);
        assert_ne!(addr.port(), 0, "the bound port is printed");
        for link in [&admin_link, &viewer_link] {
            let token = link.strip_prefix("/login/").expect("/login/<token>");
            // 32 random bytes, base64url without padding.
            assert_eq!(token.len(), 43, "{token:?}");
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
        }
        assert_ne!(admin_link, viewer_link);
        Running {
            child,
            stdin,
            _dir: dir,
            addr,
            admin_link,
            viewer_link,
            link_lines: [admin_line, viewer_line],
            stderr: Some(stderr),
        }
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
        exchange(self.addr, "GET", path, &headers, b"")
    }

    /// A form posted as the portal's own page would (its `Origin`), with the cookie.
    fn post_form(&self, path: &str, cookie: &str, fields: &[(&str, &str)]) -> Answer {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let origin = self.origin();
        let headers = [
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", origin.as_str()),
            ("cookie", cookie),
        ];
        exchange(self.addr, "POST", path, &headers, body.as_bytes())
    }

    /// Follows a link: its session cookie (`name=value`), after checking how it is set.
    fn sign_in(&self, link: &str) -> String {
        let answer = self.get(link, None);
        assert_eq!(answer.status, 303, "{}", answer.body);
        assert_eq!(answer.header("location"), Some(SETTINGS));
        let set = answer.header("set-cookie").expect("a session cookie");
        let attributes: Vec<&str> = set.split(';').map(str::trim).collect();
        for wanted in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
            assert!(attributes.contains(&wanted), "no {wanted} in {set:?}");
        }
        let cookie = attributes[0];
        let (_, id) = cookie.split_once('=').expect("name=value");
        assert_eq!(id.len(), 43, "a random session id: {cookie:?}");
        cookie.to_owned()
    }

    /// Ends the input: the dialer, with nothing pending, exits 0. What it said on stderr.
    fn finish(mut self) -> String {
        drop(self.stdin.take());
        let status = self.child.wait().expect("the dialer exits");
        let stderr = self.stderr.take().unwrap().join().unwrap();
        assert!(status.success(), "{status:?}:\n{stderr}");
        stderr
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The session's CSRF token, as the portal's JSON API gives it.
fn csrf(dialer: &Running, cookie: &str) -> String {
    let session = dialer.get("/webhooks/api/session", Some(cookie));
    assert_eq!(session.status, 200, "{}", session.body);
    session.json()["csrf_token"]
        .as_str()
        .expect("a token")
        .to_owned()
}

/// The settings in force, as the portal's JSON API gives them.
fn settings(dialer: &Running, cookie: &str) -> serde_json::Value {
    let answer = dialer.get("/webhooks/api/settings", Some(cookie));
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()
}

#[test]
fn the_administrator_link_opens_settings_once_with_a_strict_http_only_cookie() {
    let dialer = Running::start();
    let cookie = dialer.sign_in(&dialer.admin_link);

    let page = dialer.get(SETTINGS, Some(&cookie));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Enable Web Hook"), "{}", page.body);
    // The dialer's account, as its administrator, and the settings the dialer was given.
    let session = dialer.get("/webhooks/api/session", Some(&cookie)).json();
    assert_eq!(session["principal"], "dialer administrator");
    assert_eq!(session["administrator"], true);
    assert_eq!(session["account"], "dialer");
    assert_eq!(settings(&dialer, &cookie)["settings"]["url"], URL);

    // Used once: the same link again opens nothing.
    let again = dialer.get(&dialer.admin_link, None);
    assert_eq!(again.status, 403, "{}", again.body);
    assert!(again.header("set-cookie").is_none());
    assert!(again.body.contains("already used"), "{}", again.body);
    assert!(
        again
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        again.headers
    );
    // The first session still works.
    assert_eq!(dialer.get(SETTINGS, Some(&cookie)).status, 200);

    // The tokens are on stderr in the two link lines only; the session id nowhere.
    let lines = dialer.link_lines.clone();
    let tokens = [&dialer.admin_link, &dialer.viewer_link].map(|l| l[7..].to_owned());
    let stderr = dialer.finish();
    let id = cookie.split_once('=').unwrap().1;
    assert!(
        !stderr.contains(id),
        "the session id was printed:\n{stderr}"
    );
    for token in &tokens {
        let said: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains(token.as_str()))
            .collect();
        assert_eq!(said.len(), 1, "{token} printed other than once:\n{stderr}");
        assert!(lines.iter().any(|l| l == said[0]), "{stderr}");
    }
    assert!(!stderr.contains("pw-SECRET-7"), "{stderr}");
}

#[test]
fn the_viewer_link_sees_settings_and_a_forged_save_with_its_cookie_is_refused() {
    let dialer = Running::start();
    let viewer = dialer.sign_in(&dialer.viewer_link);

    let page = dialer.get(SETTINGS, Some(&viewer));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Enable Web Hook"), "{}", page.body);
    assert!(
        !page.body.contains("name=\"csrf\""),
        "a viewer gets no form"
    );
    let session = dialer.get("/webhooks/api/session", Some(&viewer)).json();
    assert_eq!(session["principal"], "dialer viewer");
    assert_eq!(session["administrator"], false);

    // A save as the page's form would send it, by hand: the viewer's cookie, the portal's own
    // Origin, the session's CSRF token, the current digest. Refused for want of permission.
    let digest = settings(&dialer, &viewer)["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let elsewhere = "http://127.0.0.1:9/elsewhere";
    let token = csrf(&dialer, &viewer);
    let forged = [
        ("csrf", token.as_str()),
        ("digest", digest.as_str()),
        ("enabled", "on"),
        ("url", elsewhere),
    ];
    let refused = dialer.post_form(SETTINGS, &viewer, &forged);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("full administrative permissions"),
        "refused for want of permission, not for its token or Origin: {}",
        refused.body
    );
    assert_eq!(settings(&dialer, &viewer)["settings"]["url"], URL);

    // The same post from the administrator's session saves: the forgery lacked only the
    // permission.
    let admin = dialer.sign_in(&dialer.admin_link);
    let token = csrf(&dialer, &admin);
    let fields = [
        ("csrf", token.as_str()),
        ("digest", digest.as_str()),
        ("enabled", "on"),
        ("url", elsewhere),
    ];
    let saved = dialer.post_form(SETTINGS, &admin, &fields);
    assert_eq!(saved.status, 303, "{}", saved.body);
    assert_eq!(settings(&dialer, &viewer)["settings"]["url"], elsewhere);
    dialer.finish();
}

#[test]
fn without_a_session_the_portal_answers_401_and_an_unknown_link_403() {
    let dialer = Running::start();
    for path in [SETTINGS, "/webhooks/api/settings", "/webhooks/campaigns"] {
        assert_eq!(dialer.get(path, None).status, 401, "{path}");
        let made_up = format!("dialer_portal_session={}", "A".repeat(43));
        assert_eq!(dialer.get(path, Some(&made_up)).status, 401, "{path}");
    }
    let unknown = dialer.get(&format!("/login/{}", "A".repeat(43)), None);
    assert_eq!(unknown.status, 403, "{}", unknown.body);
    assert!(unknown.header("set-cookie").is_none());
    // A link's token is no session id.
    let token = &dialer.admin_link["/login/".len()..];
    let as_cookie = format!("dialer_portal_session={token}");
    assert_eq!(dialer.get(SETTINGS, Some(&as_cookie)).status, 401);
    // Neither refusal spent the real links.
    dialer.sign_in(&dialer.admin_link);
    dialer.sign_in(&dialer.viewer_link);
    dialer.finish();
}

#[test]
fn a_portal_address_that_cannot_be_listened_on_is_a_usage_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("outbox.sqlite");
    let mut child = Command::new(dialer_binary())
        .arg("--store")
        .arg(&store)
        .args(["--url", URL, "--allow-http", "--allow-private"])
        .args(["--portal-addr", &addr])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the dialer");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("--portal-addr {addr}: cannot listen")),
        "{stderr}"
    );
    assert!(!stderr.contains("portal: "), "{stderr}");
    // Refused before the outbox was opened.
    assert!(!store.exists());
}
