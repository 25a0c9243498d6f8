//! How the call result travels: [`Method`], a `POST` with a body or a `GET` with a query.

use crate::error::{Error, Result};

/// How the call result travels to the receiver. Chosen per account with
/// [`PreferencesUpdate::method`](crate::PreferencesUpdate::method).
///
/// # Examples
///
/// ```
/// use call_result_webhook::{
///     CallResult, DeliveryId, PreferencesUpdate,
///     preferences::{Method, Preferences}, request::{EncodedBody, build_request},
/// };
///
/// let preferences = Preferences::from_update(
///     PreferencesUpdate::new().url("https://crm.example/hook?source=dialer").method(Method::Get),
/// )?;
/// let call = CallResult::builder().reference("123").logged_at("2019-06-19T16:11:07Z".parse()?).build();
/// let body = EncodedBody::encode(&call, &preferences)?;
/// let request = build_request(&preferences, &DeliveryId::new("msg_1")?, &body)?;
///
/// assert_eq!(request.method(), "GET");
/// assert!(request.uri().to_string().starts_with(
///     "https://crm.example/hook?source=dialer&CampaignName=&LogDateTime=2019-06-19T16%3A11%3A07&"
/// ));
/// assert!(request.body().is_empty());
/// assert!(request.headers().get("content-type").is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Method {
    /// `POST` with the keys in the body, in the account's [`Encoding`](crate::encoding::Encoding) (the default, as the
    /// product page says).
    #[default]
    Post,
    /// `GET` with the keys form-encoded and appended to the URL's own query; no body, no
    /// `Content-Type`, and the account's [`Encoding`](crate::encoding::Encoding) is not used. A call result whose URL
    /// would be longer than [`MAX_GET_URL_LEN`](crate::limits::MAX_GET_URL_LEN) is refused when it is submitted. A signed `GET`
    /// is signed over the empty body, so its signature does not cover the query.
    Get,
}

impl Method {
    /// The name used in configuration and on the command line: `post` or `get`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "post",
            Method::Get => "get",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "post" => Ok(Method::Post),
            "get" => Ok(Method::Get),
            _ => Err(Error::config("method", "expected `post` or `get`")),
        }
    }
}
