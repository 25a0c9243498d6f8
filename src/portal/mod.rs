//! The administrator's portal: the product page's screens, server-rendered, for a dialer to
//! mount under its own path and behind its own login (feature `portal`).
//!
//! [`router`] returns an [`axum::Router`] whose routes are relative to where the dialer mounts
//! it (`Router::new().nest("/webhooks", portal)`). An axum `Router` is a
//! `tower::Service<http::Request<_>>`, so an axum application nests it, and hyper (through
//! `hyper_util::service::TowerToHyperService`) or any tower-based server serves it as it is;
//! writing a bare `tower::Service` would have meant writing axum's routing again. axum is
//! built with no default features: the portal only routes and extracts, and the dialer's
//! server (or `axum::serve`) does the HTTP.
//!
//! # Who asks, for which account
//!
//! The dialer's own authentication middleware, in front of the portal, inserts a
//! [`PortalUser`] into each request's extensions: the signed-in [`Principal`] and the one
//! account they act for. The account never comes from the URL or a form, so editing a link
//! reaches no other customer. A request without one is answered `401`. A principal without
//! full administrative permission ([`Principal::user`]) sees every screen read-only, with no
//! forms, and every change is refused with `403`; the crate's own methods check the same
//! permission again.
//!
//! # Screens and routes
//!
//! All links and form actions are relative, so the portal works under any mount point.
//!
//! | HTML | JSON | What |
//! |---|---|---|
//! | `GET /settings`, `POST /settings` | `GET /api/settings`, `POST /api/settings` | Settings > Preferences > WebHook |
//! | `GET /campaigns`, `POST /campaign-webhook` | `GET /api/campaigns`, `POST /api/campaign-webhook` | Campaign Management, each campaign's Additional Settings |
//! | `GET /deliveries` | `GET /api/deliveries` | every attempt, newest first, paged and filtered; the account's counts |
//! | `GET /dead-letters`, `POST /replay`, `POST /remove`, `POST /resume`, `POST /send-test` | the same under `/api/` | dead letters, resume, send test |
//! | | `GET /api/session` | who is signed in, and the CSRF token for the API's changes |
//!
//! The campaigns listed are those with a switch of their own in the account's settings, and
//! those the dialer names in [`PortalUser::campaigns`] (a campaign created since, whose
//! "Enable WebHook" was never set).
//!
//! Deliveries: the attempts log ([`Webhooks::attempts`]), every attempt of the account kept
//! for the dialer's retention
//! ([`WebhooksBuilder::attempt_retention`](crate::WebhooksBuilder::attempt_retention), 7 days
//! by default), newest first, [`ATTEMPT_PAGE`](crate::limits::ATTEMPT_PAGE) a page, filtered
//! by campaign and state: time, `webhook-id`, campaign, attempt number, state, outcome (status or
//! failure), duration and the start of the receiver's answer (escaped, like every value a
//! receiver controls, and with the account's own secrets blanked out by the crate).
//!
//! # Protections
//!
//! - Every value a customer or a receiver controls (campaign names, URLs, user names, header
//!   values, failure reasons, the receiver's answer) is HTML-escaped where it is written.
//! - Every change carries a CSRF token (a form field `csrf`, or the `x-csrf-token` header on
//!   the JSON API) derived by HMAC-SHA256 from a key of the portal and the session, account
//!   and principal of [`PortalUser`], compared in constant time; and its `Origin` header must
//!   be the one configured ([`PortalOptions::origin`]) or, when none is, the request's `Host`.
//!   A change without `Origin` is refused: every browser the portal serves sends it on a
//!   `POST`.
//! - Every answer carries `Content-Security-Policy: default-src 'none'` with only the portal's
//!   own stylesheet admitted by its hash (no script at all, inline or not), `frame-ancestors
//!   'none'` and `X-Frame-Options: DENY`, `Referrer-Policy: same-origin`, `Cache-Control:
//!   no-store` and `X-Content-Type-Options: nosniff`. `same-origin`, not `no-referrer`: no
//!   referrer ever leaves the portal's origin either way, but under `no-referrer` a browser
//!   sends `Origin: null` on the portal's own form posts (the Fetch standard's rule for a
//!   `POST`), and the `Origin` check would refuse them all.
//! - No password, token, secret header value or signing secret is ever written to a page or a
//!   JSON answer: a field says whether it is set, and an empty field keeps it.
//!
//! # Saves over someone else's change
//!
//! The crate does not expose the version of one account's settings (only
//! [`Webhooks::list_accounts`] does, for the whole store), so the settings form carries a
//! digest of the settings it was rendered from: an HMAC, under the portal's key, of everything
//! the form shows and of the secrets it does not (so a digest reveals nothing of them). A save
//! whose digest no longer matches the settings in force is refused with `409` and the form
//! re-rendered from the newer settings. The save itself is
//! [`Webhooks::update_preferences`] with the principal: the crate's compare-and-set against
//! the store, audited with the principal's name.
//!
//! # Choices where the crate decided first
//!
//! - Dead letters are listed to full administrators only, because
//!   [`Webhooks::dead_letters`] is; a viewer sees the counts and the last failure on every
//!   screen, and a note where the list would be.
//! - A user name changed alone is refused until the password is typed again: the stored
//!   password is never read back, and the crate's credentials are set as a pair.
//! - [`router`] returns a `Result`: a short key, a malformed origin or a "Send test"
//!   dispatcher holding another URL policy is refused when the portal is built, not at the
//!   first request.
//!
//! # Examples
//!
//! ```
//! use axum::Router;
//! use call_result_webhook::{MemoryStore, Webhooks, portal::{self, PortalOptions}};
//!
//! let webhooks = Webhooks::builder().store(MemoryStore::new()).build()?;
//! let options = PortalOptions::new()?.origin("https://dialer.example");
//! let app: Router = Router::new().nest("/webhooks", portal::router(webhooks, options)?);
//! // In front of it, the dialer's login inserts a `portal::PortalUser` into each request.
//! # let _ = app;
//! # Ok::<(), call_result_webhook::Error>(())
//! ```

use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};

use self::access::Signed;
use self::dead_letters::Action;
use crate::dispatch::Dispatcher;
use crate::error::Result;
use crate::ids::{AccountId, CampaignId};
use crate::permissions::Principal;
use crate::webhooks::Webhooks;

mod access;
mod api;
mod campaigns;
mod csrf;
mod dead_letters;
mod deliveries;
mod html;
mod send_test;
mod settings;
mod settings_form;

/// The signed-in person and the one account they act for, inserted into each request's
/// extensions by the dialer's authentication middleware in front of the portal.
///
/// Its `Debug` never shows the session.
#[derive(Clone)]
pub struct PortalUser {
    principal: Principal,
    account: AccountId,
    session: String,
    campaigns: Vec<CampaignId>,
}

impl PortalUser {
    /// `principal`, acting for `account`, in the dialer's login session `session`: any value
    /// that stays the same for the session and differs between sessions (the session's id,
    /// or a random value kept in it). The forms' CSRF tokens are derived from it.
    pub fn new(
        principal: Principal,
        account: impl Into<AccountId>,
        session: impl Into<String>,
    ) -> Self {
        PortalUser {
            principal,
            account: account.into(),
            session: session.into(),
            campaigns: Vec::new(),
        }
    }

    /// The account's campaigns as the dialer knows them, listed on Campaign Management beside
    /// those with a switch of their own (a campaign whose "Enable WebHook" was never set is
    /// known to the dialer only).
    #[must_use]
    pub fn campaigns(mut self, campaigns: impl IntoIterator<Item = CampaignId>) -> Self {
        self.campaigns = campaigns.into_iter().collect();
        self
    }

    /// Who is signed in.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The account they act for.
    pub fn account(&self) -> &AccountId {
        &self.account
    }
}

impl fmt::Debug for PortalUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortalUser")
            .field("principal", &self.principal)
            .field("account", &self.account)
            .field("session", &"[redacted]")
            .field("campaigns", &self.campaigns)
            .finish()
    }
}

/// How the portal is set up: [`PortalOptions::new`], then what differs.
///
/// Its `Debug` never shows the key.
pub struct PortalOptions {
    key: csrf::Key,
    origin: Option<String>,
    dispatcher: Option<Arc<dyn Dispatcher>>,
    dead_letters_shown: usize,
}

impl fmt::Debug for PortalOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortalOptions")
            .field("key", &"[redacted]")
            .field("origin", &self.origin)
            .field("send_test", &self.dispatcher.is_some())
            .field("dead_letters_shown", &self.dead_letters_shown)
            .finish()
    }
}

impl PortalOptions {
    /// A fresh random key for the CSRF tokens and settings digests, no configured origin
    /// (changes must come from the request's own `Host`), no "Send test", 100 dead letters
    /// shown.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) (field `portal_key`) when the system's random source fails.
    pub fn new() -> Result<Self> {
        Ok(PortalOptions {
            key: csrf::Key::random()?,
            origin: None,
            dispatcher: None,
            dead_letters_shown: 100,
        })
    }

    /// The key the CSRF tokens and settings digests are derived with, for a fleet of
    /// processes behind one load balancer: each must use the same key, kept as secret as a
    /// session key. At least 32 bytes; shorter keys are refused when the router is built.
    #[must_use]
    pub fn key(mut self, key: &[u8]) -> Self {
        self.key = csrf::Key::from_bytes(key);
        self
    }

    /// The origin changes must come from, as a browser sends it in `Origin`
    /// (`https://dialer.example`, or with a port). Without one, a change's `Origin` must name
    /// the request's own `Host`.
    #[must_use]
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into().trim_end_matches('/').to_owned());
        self
    }

    /// Offers "Send test": the page's sample call result sent now to the account's URL through
    /// `dispatcher`, with the account's authentication and signing, after the URL policy.
    /// The dispatcher adopts the policy of the [`Webhooks`], as a worker's does.
    #[must_use]
    pub fn send_test(mut self, dispatcher: impl Dispatcher) -> Self {
        self.dispatcher = Some(Arc::new(dispatcher));
        self
    }

    /// How many dead letters the screens list at most (1 to 1,000; default 100).
    #[must_use]
    pub fn dead_letters_shown(mut self, n: usize) -> Self {
        self.dead_letters_shown = n.clamp(1, 1_000);
        self
    }
}

/// What every handler shares.
pub(crate) struct Portal {
    webhooks: Webhooks,
    options: PortalOptions,
}

type Shared = Arc<Portal>;

/// The portal's routes, relative to where the dialer mounts them (see the [module
/// docs](self)).
///
/// # Errors
///
/// [`Error::InvalidConfig`](crate::Error::InvalidConfig) (field `portal_key`) for a key under 32 bytes, (field `origin`)
/// for an origin that is not `scheme://host[:port]`, or (field `policy`) when the "Send test"
/// dispatcher holds a URL policy other than the one of `webhooks`.
pub fn router(webhooks: Webhooks, options: PortalOptions) -> Result<Router> {
    options.key.check()?;
    if let Some(origin) = &options.origin {
        access::check_origin_setting(origin)?;
    }
    if let Some(dispatcher) = &options.dispatcher {
        dispatcher.adopt_policy(webhooks.engine.policy())?;
    }
    let portal = Arc::new(Portal { webhooks, options });
    let router = Router::new()
        .route("/settings", get(settings::show).post(settings::save))
        .route("/campaigns", get(campaigns::show))
        .route("/campaign-webhook", post(campaigns::switch))
        .route("/deliveries", get(deliveries::show))
        .route("/dead-letters", get(dead_letters::show))
        .route(
            "/replay",
            post(|s: State<Shared>, u: Signed, h: HeaderMap, b: Bytes| {
                dead_letters::act_form(Action::Replay, s, u, h, b)
            }),
        )
        .route(
            "/remove",
            post(|s: State<Shared>, u: Signed, h: HeaderMap, b: Bytes| {
                dead_letters::act_form(Action::Remove, s, u, h, b)
            }),
        )
        .route("/resume", post(dead_letters::resume))
        .route("/send-test", post(dead_letters::send_test))
        .merge(api::routes())
        // Any other path under the portal is the portal's own 404, with its headers (a nested
        // router's fallback is not used under `Router::nest`; a catch-all route is).
        .route("/{*rest}", axum::routing::any(not_found))
        .layer(axum::middleware::from_fn(access::security_headers))
        .with_state(portal);
    Ok(router)
}

/// A path the portal does not have.
async fn not_found() -> axum::response::Response {
    use axum::response::IntoResponse as _;
    html::problem(
        axum::http::StatusCode::NOT_FOUND,
        None,
        "There is no such page in the webhook portal.",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_neither_the_session_nor_the_key() {
        let user = PortalUser::new(Principal::administrator("alice"), "acme", "s3ss10n-id");
        assert!(!format!("{user:?}").contains("s3ss10n-id"));
        let key = [0x5a_u8; 32];
        let options = PortalOptions::new().unwrap().key(&key);
        let shown = format!("{options:?}");
        assert!(shown.contains("[redacted]"));
        assert!(!shown.contains("90, 90") && !shown.contains("5a5a"));
    }
}
