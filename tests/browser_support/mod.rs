//! A real browser for tests: headless Chromium driven through chromedriver over W3C WebDriver.
//!
//! [`Browser::start`] starts `chromedriver --port=<free port>` as a child of the test (killed
//! when the [`Browser`] drops), opens one headless Chromium session on a temporary profile, and
//! offers what the portal's browser tests do as a person would: go to a page, find elements by
//! CSS, fill and submit forms, read text and accessible names, read cookies, tell whether a
//! script ran, and save screenshots (PNG).
//!
//! ```ignore
//! mod browser_support;
//! let Some(browser) = browser_support::Browser::start("tests/x.rs") else { return };
//! browser.goto("http://127.0.0.1:PORT/settings");
//! browser.fill("input[name=url]", "http://127.0.0.1:9/hook");
//! browser.find("button[type=submit]").click();
//! assert_eq!(browser.find("h1").text(), "WebHook");
//! ```
//!
//! # The client: a minimal W3C WebDriver client of our own
//!
//! WebDriver is JSON over HTTP/1.1 to a server on 127.0.0.1; the commands the tests use
//! (about twenty endpoints) fit in this file. Written over `std::net::TcpStream` with
//! `serde_json` and `base64`, which the crate already depends on, it adds no dependency, no
//! line to `Cargo.toml` and nothing to build. A client crate would: `fantoccini` (0.22) brings
//! Mozilla's `webdriver` protocol crate (MPL-2.0) and what it needs, a pooled `hyper-util`
//! client, and by default native-tls with OpenSSL (rustls as an option) for a connection that
//! never leaves loopback; `thirtyfour` is built on fantoccini and adds more. The client here
//! is blocking (one request per connection; chromedriver keeps connections open, so the body
//! is read to its `Content-Length`), so the tests are plain `#[test]` functions and the
//! servers under test run on runtimes of their own.
//!
//! # The browser, kept off the network
//!
//! Debian's `chromium` and `chromium-driver` (`/usr/lib/chromium/chromium` is started
//! directly, not through the `/usr/bin/chromium` wrapper, which adds remote extensions and
//! Google's API keys). Chromium runs with `--headless=new --no-sandbox --disable-gpu
//! --disable-dev-shm-usage`, a temporary `--user-data-dir`, every background service that would
//! reach the internet switched off (background networking, component and extension updates,
//! sync, safe browsing, translation, metrics, field trials, domain reliability), and a host
//! resolver that answers no name at all except `localhost`: the tests use 127.0.0.1 only.
//!
//! # When no browser is installed
//!
//! [`Browser::start`] says plainly on stderr that the test did not run and returns `None`; with
//! `CALL_RESULT_WEBHOOK_REQUIRE_BROWSER=1` (set by `.ci/run`) it panics instead.
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// With this set to `1`, a missing browser fails the test instead of skipping it.
pub const REQUIRE: &str = "CALL_RESULT_WEBHOOK_REQUIRE_BROWSER";

/// The key W3C WebDriver gives an element reference under.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long one WebDriver command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Chromium's flags: headless, on a profile of its own, and nothing fetched from outside.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    "--lang=en-GB",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-pings",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-client-side-phishing-detection",
    "--disable-domain-reliability",
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--disable-field-trial-config",
    "--disable-search-engine-choice-screen",
    "--safebrowsing-disable-auto-update",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,\
     CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions,\
     PrivacySandboxSettings4,NetworkTimeServiceQuerying",
    // Every name but 127.0.0.1 and localhost fails to resolve: nothing can be fetched by name.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
];

/// The programs, where Debian installs them.
fn find_programs() -> Option<(PathBuf, PathBuf)> {
    let driver = ["/usr/lib/chromium/chromedriver", "/usr/bin/chromedriver"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())?;
    let browser = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())?;
    Some((driver, browser))
}

/// What WebDriver answered with an error.
#[derive(Debug, Clone)]
pub struct WebDriverError {
    /// The HTTP status of the answer.
    pub status: u16,
    /// The W3C error code: `no such element`, `no such alert`, ...
    pub error: String,
    /// The driver's message.
    pub message: String,
}

/// One cookie as the browser holds it.
#[derive(Debug, Clone)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub path: Option<String>,
    pub http_only: bool,
    pub secure: bool,
    /// `Strict`, `Lax` or `None`, as the browser reports it.
    pub same_site: Option<String>,
}

/// chromedriver, a child of the test, killed on drop.
struct Driver {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One headless Chromium session. Dropping it closes the session, kills chromedriver (and with
/// it Chromium) and removes the profile.
pub struct Browser {
    // Fields drop in order: the session is deleted in `Drop`, then the driver is killed, then the
    // profile removed.
    session: String,
    driver: Driver,
    started: Instant,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and opens a headless Chromium. `None` (after saying so on stderr,
    /// naming `test`) when chromium or chromedriver is not installed and
    /// [`REQUIRE`] is not set; a panic when it is.
    pub fn start(test: &str) -> Option<Browser> {
        let Some((driver, browser)) = find_programs() else {
            if std::env::var(REQUIRE).is_ok_and(|v| v == "1") {
                panic!("chromium or chromedriver is not installed, and {REQUIRE}=1 requires it");
            }
            eprintln!(
                "{test}: chromium or chromedriver is not installed: this browser test DID NOT \
                 RUN (apt-get install chromium chromium-driver; {REQUIRE}=1 makes this a failure)"
            );
            return None;
        };
        // A free port can be taken by someone else before chromedriver binds it: try again.
        let mut last = String::new();
        for _ in 0..5 {
            match Browser::try_start(&driver, &browser) {
                Ok(started) => return Some(started),
                Err(why) => last = why,
            }
        }
        panic!("chromedriver and chromium did not start: {last}");
    }

    fn try_start(driver_path: &Path, browser_path: &Path) -> Result<Browser, String> {
        let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let log = profile.path().join("chromedriver.log");
        // Without `--allowed-ips`, chromedriver listens on loopback only (with it, on every
        // interface).
        let child = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .env_remove("GOOGLE_API_KEY")
            .env_remove("GOOGLE_DEFAULT_CLIENT_ID")
            .env_remove("GOOGLE_DEFAULT_CLIENT_SECRET")
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", driver_path.display()))?;
        let mut driver = Driver { child, port, log };
        // chromedriver answers /status once it listens.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = driver.child.try_wait() {
                return Err(format!("chromedriver exited at once: {status}"));
            }
            if let Ok((200, _)) = http(port, "GET", "/status", None) {
                break;
            }
            if Instant::now() > deadline {
                return Err("chromedriver did not answer /status within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let data_dir = profile.path().join("chromium");
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", data_dir.display()));
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "acceptInsecureCerts": false,
                    // An alert stays open for the test to see (`alert_text`), rather than being
                    // dismissed by the next command.
                    "unhandledPromptBehavior": "ignore",
                    "timeouts": { "implicit": 0, "pageLoad": 30000, "script": 10000 },
                    "goog:chromeOptions": {
                        "binary": browser_path.display().to_string(),
                        "args": args,
                        "prefs": {
                            "credentials_enable_service": false,
                            "profile.password_manager_enabled": false,
                            "translate.enabled": false,
                        },
                    },
                }
            }
        });
        let started = Instant::now();
        let value = command(port, "POST", "/session", Some(&capabilities)).map_err(|e| {
            let log = std::fs::read_to_string(&driver.log).unwrap_or_default();
            let tail: String = log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
            format!("new session: {e:?}\nchromedriver log (last lines, newest first):\n{tail}")
        })?;
        let session = value["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no sessionId in {value}"))?
            .to_string();
        // On an error above, `driver` drops here and is killed (and with it the browser).
        Ok(Browser {
            session,
            driver,
            started,
            _profile: profile,
        })
    }

    /// How long ago the session opened.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    // --- the protocol -------------------------------------------------------------------

    /// Sends one command of this session (`path` after `/session/{id}`), returning its value.
    pub fn try_command(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, WebDriverError> {
        let path = format!("/session/{}{path}", self.session);
        // W3C: a POST always carries a JSON body, `{}` when there are no parameters.
        let empty = json!({});
        let body = if method == "POST" {
            Some(body.unwrap_or(&empty))
        } else {
            body
        };
        command(self.driver.port, method, &path, body)
    }

    /// As [`Browser::try_command`], failing the test on an error.
    pub fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.try_command(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e:?}"))
    }

    // --- pages --------------------------------------------------------------------------

    /// Goes to `url` and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(&json!({ "url": url })));
    }

    /// The URL the browser shows.
    pub fn current_url(&self) -> String {
        self.command("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The page's title.
    pub fn title(&self) -> String {
        self.command("GET", "/title", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The page's markup as the browser now holds it (after parsing: serialised from the DOM).
    pub fn source(&self) -> String {
        self.command("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The text the page shows (`document.body.innerText`).
    pub fn body_text(&self) -> String {
        self.find("body").text()
    }

    /// Sets the window's size (the viewport a screenshot shows).
    pub fn set_window_size(&self, width: u32, height: u32) {
        self.command(
            "POST",
            "/window/rect",
            Some(&json!({ "width": width, "height": height })),
        );
    }

    // --- elements -----------------------------------------------------------------------

    /// The first element matching `css`, if any.
    pub fn try_find(&self, css: &str) -> Option<Element<'_>> {
        match self.try_command(
            "POST",
            "/element",
            Some(&json!({ "using": "css selector", "value": css })),
        ) {
            Ok(value) => Some(self.element(&value)),
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("find {css:?}: {e:?}"),
        }
    }

    /// The first element matching `css`; the test fails if there is none.
    pub fn find(&self, css: &str) -> Element<'_> {
        self.try_find(css).unwrap_or_else(|| {
            panic!(
                "no element matches {css:?} on {}; the page shows:\n{}",
                self.current_url(),
                self.try_find("body").map(|b| b.text()).unwrap_or_default()
            )
        })
    }

    /// Every element matching `css`, in document order.
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let found = self.command(
            "POST",
            "/elements",
            Some(&json!({ "using": "css selector", "value": css })),
        );
        found
            .as_array()
            .map(|all| all.iter().map(|v| self.element(v)).collect())
            .unwrap_or_default()
    }

    /// Waits up to `timeout` for an element matching `css`.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Element<'_> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.try_find(css) {
                return found;
            }
            if Instant::now() > deadline {
                return self.find(css);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `timeout` until an element matching `css` shows a text for which `want`
    /// holds, and returns that text. The page may be changing meanwhile (a form's answer
    /// loading): an element of the page being left is looked for again, never an error.
    pub fn wait_for_text(
        &self,
        css: &str,
        timeout: Duration,
        want: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            let found = self.try_command(
                "POST",
                "/element",
                Some(&json!({ "using": "css selector", "value": css })),
            );
            if let Ok(found) = found
                && let Some(id) = found[ELEMENT].as_str()
                && let Ok(text) = self.try_command("GET", &format!("/element/{id}/text"), None)
            {
                let text = text.as_str().unwrap_or_default().to_string();
                if want(&text) {
                    return text;
                }
                last = Some(text);
            }
            if Instant::now() > deadline {
                panic!(
                    "no element matching {css:?} showed the text wanted within {timeout:?} (last \
                     seen: {last:?}) on {}; the page shows:\n{}",
                    self.current_url(),
                    self.try_find("body").map(|b| b.text()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `timeout` until the browser shows a URL for which `want` holds.
    pub fn wait_for_url(&self, timeout: Duration, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let url = self.current_url();
            if want(&url) {
                return url;
            }
            assert!(
                Instant::now() < deadline,
                "the browser still shows {url} after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn element(&self, value: &Value) -> Element<'_> {
        let id = value[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("not an element reference: {value}"))
            .to_string();
        Element { browser: self, id }
    }

    /// Replaces the value of the field matching `css` with `text`, as typed.
    pub fn fill(&self, css: &str, text: &str) {
        let field = self.find(css);
        field.clear();
        if !text.is_empty() {
            field.send_keys(text);
        }
    }

    /// Submits the form holding the element matching `css` as its submit button would
    /// (`requestSubmit`: the form's validation and submit event run, as on a click).
    pub fn submit(&self, css: &str) {
        let element = self.find(css);
        self.execute(
            "const e = arguments[0]; const form = e.form || e.closest('form'); \
             if (e.type === 'submit') { form.requestSubmit(e); } else { form.requestSubmit(); }",
            vec![element.reference()],
        );
    }

    // --- scripts, alerts, cookies, screenshots ------------------------------------------

    /// Runs `script` (a function body; `arguments` holds `args`) in the page, returning what
    /// it returns.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
    }

    /// The text of the alert, confirm or prompt open on the page, if one is.
    pub fn alert_text(&self) -> Option<String> {
        match self.try_command("GET", "/alert/text", None) {
            Ok(text) => Some(text.as_str().unwrap_or_default().to_string()),
            Err(e) if e.error == "no such alert" => None,
            Err(e) => panic!("alert text: {e:?}"),
        }
    }

    /// Whether a script the test planted ran: an alert is open, or `window[marker]` was set.
    /// Looks for `within` (a script on an image's error can run a little after the load).
    pub fn script_ran(&self, marker: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(text) = self.alert_text() {
                return Some(format!("an alert opened: {text:?}"));
            }
            let value = self.execute(
                "return window[arguments[0]] === undefined ? null : String(window[arguments[0]]);",
                vec![json!(marker)],
            );
            if let Some(value) = value.as_str() {
                return Some(format!("window.{marker} = {value}"));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every cookie the page at the current URL can be sent.
    pub fn cookies(&self) -> Vec<Cookie> {
        let all = self.command("GET", "/cookie", None);
        all.as_array()
            .map(|all| {
                all.iter()
                    .map(|c| Cookie {
                        name: c["name"].as_str().unwrap_or_default().to_string(),
                        value: c["value"].as_str().unwrap_or_default().to_string(),
                        path: c["path"].as_str().map(str::to_string),
                        http_only: c["httpOnly"].as_bool().unwrap_or(false),
                        secure: c["secure"].as_bool().unwrap_or(false),
                        same_site: c["sameSite"].as_str().map(str::to_string),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The cookie named `name`, if the current page can be sent one.
    pub fn cookie(&self, name: &str) -> Option<Cookie> {
        self.cookies().into_iter().find(|c| c.name == name)
    }

    /// Forgets every cookie of the current page's site.
    pub fn delete_cookies(&self) {
        self.command("DELETE", "/cookie", None);
    }

    /// A screenshot of the viewport, as PNG.
    pub fn screenshot(&self) -> Vec<u8> {
        let encoded = self.command("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("a screenshot in base64"))
            .expect("valid base64");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        png
    }

    /// Saves a screenshot of the whole page to `path` as PNG: the window made as large as the
    /// page (at least its current size, at most 4000 pixels each way) for the shot, and put
    /// back after.
    pub fn save_screenshot(&self, path: &Path) {
        let page = self.execute(
            "const d = document.documentElement; \
             return [Math.ceil(d.scrollWidth), Math.ceil(d.scrollHeight), \
                     window.innerWidth, window.innerHeight];",
            vec![],
        );
        let at = |i: usize| page[i].as_u64().unwrap_or(0) as u32;
        let (page_width, page_height, inner_width, inner_height) = (at(0), at(1), at(2), at(3));
        let rect = self.command("GET", "/window/rect", None);
        let width = rect["width"].as_u64().unwrap_or(1280) as u32;
        let height = rect["height"].as_u64().unwrap_or(900) as u32;
        // The window's outer size exceeds its viewport by the browser's frame, if any.
        let shot_width = page_width.clamp(inner_width, 4000) + width.saturating_sub(inner_width);
        let shot_height =
            page_height.clamp(inner_height, 4000) + height.saturating_sub(inner_height);
        self.set_window_size(shot_width, shot_height);
        let png = self.screenshot();
        self.set_window_size(width, height);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closes Chromium; the driver is killed next whatever this answers.
        let _ = command(
            self.driver.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}

/// One element of the page.
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
}

impl Element<'_> {
    fn path(&self, rest: &str) -> String {
        format!("/element/{}{rest}", self.id)
    }

    /// The element as a script argument.
    pub fn reference(&self) -> Value {
        json!({ ELEMENT: self.id })
    }

    /// The text it shows, as rendered (hidden text left out).
    pub fn text(&self) -> String {
        self.get("/text").as_str().unwrap_or_default().to_string()
    }

    /// Its accessible name, as the browser computes it for assistive technology (from
    /// `aria-label`, `aria-labelledby`, a `<label>`, its text, ...).
    pub fn accessible_name(&self) -> String {
        self.get("/computedlabel")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Its ARIA role, as the browser computes it.
    pub fn role(&self) -> String {
        self.get("/computedrole")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The attribute `name` as written in the markup, if present.
    pub fn attr(&self, name: &str) -> Option<String> {
        self.get(&format!("/attribute/{name}"))
            .as_str()
            .map(str::to_string)
    }

    /// The DOM property `name` (`value`, `checked`, ...).
    pub fn property(&self, name: &str) -> Value {
        self.get(&format!("/property/{name}"))
    }

    /// The element's tag name, lowercased.
    pub fn tag(&self) -> String {
        self.get("/name")
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
    }

    /// Whether it is enabled (a form control without `disabled`, and not in a disabled
    /// fieldset).
    pub fn is_enabled(&self) -> bool {
        self.get("/enabled").as_bool().unwrap_or(false)
    }

    /// Whether it is displayed.
    pub fn is_displayed(&self) -> bool {
        self.get("/displayed").as_bool().unwrap_or(false)
    }

    /// Whether a checkbox or radio button is checked, or an option selected.
    pub fn is_selected(&self) -> bool {
        self.get("/selected").as_bool().unwrap_or(false)
    }

    /// Its current value (`value` property) as text.
    pub fn value(&self) -> String {
        match self.property("value") {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }

    /// Clicks it, as a person would (it is scrolled into view first; a click on something
    /// covered or disabled fails).
    pub fn click(&self) {
        self.post("/click", json!({}));
    }

    /// Empties an editable field.
    pub fn clear(&self) {
        self.post("/clear", json!({}));
    }

    /// Types `text` into it.
    pub fn send_keys(&self, text: &str) {
        self.post("/value", json!({ "text": text }));
    }

    /// The first element inside it matching `css`, if any.
    pub fn try_find(&self, css: &str) -> Option<Element<'_>> {
        match self.browser.try_command(
            "POST",
            &self.path("/element"),
            Some(&json!({ "using": "css selector", "value": css })),
        ) {
            Ok(value) => Some(self.browser.element(&value)),
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("find {css:?}: {e:?}"),
        }
    }

    /// The first element inside it matching `css`; the test fails if there is none.
    pub fn find(&self, css: &str) -> Element<'_> {
        self.try_find(css)
            .unwrap_or_else(|| panic!("no element matches {css:?} inside {}", self.text()))
    }

    /// Every element inside it matching `css`.
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let found = self.post(
            "/elements",
            json!({ "using": "css selector", "value": css }),
        );
        found
            .as_array()
            .map(|all| all.iter().map(|v| self.browser.element(v)).collect())
            .unwrap_or_default()
    }

    fn get(&self, rest: &str) -> Value {
        self.browser.command("GET", &self.path(rest), None)
    }

    fn post(&self, rest: &str, body: Value) -> Value {
        self.browser.command("POST", &self.path(rest), Some(&body))
    }
}

// --- HTTP/1.1 to chromedriver ----------------------------------------------------------------

/// One WebDriver command: its `value`, or the error it answered.
fn command(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, WebDriverError> {
    let (status, body) = http(port, method, path, body).map_err(|e| WebDriverError {
        status: 0,
        error: "transport".into(),
        message: e,
    })?;
    let parsed: Value = serde_json::from_slice(&body).map_err(|e| WebDriverError {
        status,
        error: "not JSON".into(),
        message: format!("{e}: {}", String::from_utf8_lossy(&body)),
    })?;
    let value = parsed.get("value").cloned().unwrap_or(Value::Null);
    if status == 200 {
        return Ok(value);
    }
    Err(WebDriverError {
        status,
        error: value["error"].as_str().unwrap_or("unknown").to_string(),
        message: value["message"].as_str().unwrap_or_default().to_string(),
    })
}

/// One HTTP/1.1 exchange on a connection of its own: the status and the whole body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Vec<u8>), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(COMMAND_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n\
         Connection: close\r\n"
    );
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!(
            "Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    // chromedriver keeps the connection open despite `Connection: close`: read the head, then
    // exactly the body it announces.
    let mut answer = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let split = loop {
        if let Some(at) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream
            .read(&mut buf)
            .map_err(|e| format!("{method} {path}: reading the answer: {e}"))?;
        if n == 0 {
            return Err(format!(
                "{method} {path}: closed before the end of the head: {}",
                String::from_utf8_lossy(&answer)
            ));
        }
        answer.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&answer[..split]).to_string();
    let mut rest = answer[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        } else if name == "content-length" {
            length = value.parse::<usize>().ok();
        }
    }
    let complete = |rest: &[u8]| match (chunked, length) {
        (true, _) => rest.ends_with(b"0\r\n\r\n") && dechunk(rest).is_ok(),
        (false, Some(length)) => rest.len() >= length,
        (false, None) => false,
    };
    while !complete(&rest) {
        let n = stream
            .read(&mut buf)
            .map_err(|e| format!("{method} {path}: reading the body: {e}"))?;
        if n == 0 {
            break;
        }
        rest.extend_from_slice(&buf[..n]);
    }
    if chunked {
        rest = dechunk(&rest)?;
    } else if let Some(length) = length {
        if rest.len() < length {
            return Err(format!("{method} {path}: body cut short"));
        }
        rest.truncate(length);
    }
    Ok((status, rest))
}

/// A chunked body, joined.
fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk without its size line")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("chunk size {size_text:?}: {e}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("a chunk cut short".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
