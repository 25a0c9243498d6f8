//! The administrator's portal mounted in an axum application, behind a toy login.
//!
//! ```sh
//! cargo run --example portal_axum --features portal -- [127.0.0.1:8080]
//! ```
//!
//! Open the printed address, sign in as `alice` (a full administrator) or `victor` (read only)
//! with the password `demo`, and the portal opens on Settings > Preferences > WebHook. The
//! login keeps sessions in memory and sets one cookie, `HttpOnly; SameSite=Strict`; the
//! middleware in front of the portal turns that session into the portal's `PortalUser` (the
//! principal and the one account they act for). A real dialer uses its own login here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use call_result_webhook::portal::{self, PortalOptions, PortalUser};
use call_result_webhook::{HyperDispatcher, MemoryStore, Principal, UrlPolicy, Webhooks};

/// The account every user of this toy acts for.
const ACCOUNT: &str = "acme";

/// Signed-in sessions: session id to principal.
#[derive(Clone, Default)]
struct Sessions(Arc<Mutex<HashMap<String, Principal>>>);

impl Sessions {
    fn get(&self, id: &str) -> Option<Principal> {
        self.0.lock().expect("sessions").get(id).cloned()
    }

    fn start(&self, principal: Principal) -> String {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("random bytes");
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.0
            .lock()
            .expect("sessions")
            .insert(id.clone(), principal);
        id
    }
}

/// The session id in the request's `session` cookie.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("session=").map(str::to_owned))
}

/// In front of the portal: the session's principal, for the one account, as a `PortalUser`.
/// Without a session, nothing is inserted and the portal answers 401.
async fn authenticate(
    State(sessions): State<Sessions>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(id) = session_cookie(request.headers())
        && let Some(principal) = sessions.get(&id)
    {
        let user = PortalUser::new(principal, ACCOUNT, id)
            .campaigns(["Winter Sale".into(), "Spring".into()]);
        request.extensions_mut().insert(user);
    }
    next.run(request).await
}

const LOGIN_PAGE: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
    <title>Sign in</title></head><body><h1>Sign in</h1><form method=\"post\" action=\"/login\">\
    <label>User <select name=\"user\"><option value=\"alice\">alice (administrator)</option>\
    <option value=\"victor\">victor (read only)</option></select></label> \
    <label>Password <input type=\"password\" name=\"password\"></label> \
    <button type=\"submit\">Sign in</button></form></body></html>";

async fn login_page() -> Html<&'static str> {
    Html(LOGIN_PAGE)
}

/// Checks the toy password and starts a session: the cookie is `HttpOnly` (no script reads
/// it) and `SameSite=Strict` (no other site's page sends it).
async fn login(State(sessions): State<Sessions>, body: Bytes) -> Response {
    let fields: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let principal = match (
        fields.get("user").map(String::as_str),
        fields.get("password").map(String::as_str),
    ) {
        (Some("alice"), Some("demo")) => Principal::administrator("alice"),
        (Some("victor"), Some("demo")) => Principal::user("victor"),
        _ => return (StatusCode::UNAUTHORIZED, Html(LOGIN_PAGE)).into_response(),
    };
    let id = sessions.start(principal);
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!("session={id}; Path=/; HttpOnly; SameSite=Strict"),
            ),
            (header::LOCATION, "/webhooks/settings".to_owned()),
        ],
    )
        .into_response()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned())
        .parse()?;

    // Receivers on your own network are fine for a try-out; a dialer keeps the default policy.
    let policy = UrlPolicy::new().allow_http(true).allow_private();
    let webhooks = Webhooks::builder()
        .store(MemoryStore::new())
        .policy(policy)
        .build()?;
    let _worker =
        webhooks.start_tokio(HyperDispatcher::new(), &tokio::runtime::Handle::current())?;

    let options = PortalOptions::new()?
        .origin(format!("http://{addr}"))
        .send_test(HyperDispatcher::new());
    let sessions = Sessions::default();
    let portal = portal::router(webhooks, options)?.layer(middleware::from_fn_with_state(
        sessions.clone(),
        authenticate,
    ));
    let app = Router::new()
        .route("/", get(login_page))
        .route("/login", get(login_page).post(login))
        .with_state(sessions)
        .nest("/webhooks", portal);

    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("portal: sign in at http://{addr}/login (alice or victor, password demo)");
    axum::serve(listener, app).await?;
    Ok(())
}
