//! The HTTP upgrade that opens a grid transport, as MinIO does it
//! (docs/protocol.md#transport-upgrade): the WebSocket URL a dialer opens, the
//! headers it sends, and the acceptor's checks of them before it upgrades.
//!
//! Pure functions over strings, header bytes and timestamps, so that any
//! driver, on any HTTP stack, makes and checks the same requests. What comes
//! after the upgrade (the `Connect` message) is in the `handshake` module.

use std::fmt;
use std::time::Duration;

use crate::time::Timestamp;

/// MinIO's grid route.
pub const DEFAULT_ROUTE: &str = "/minio/grid/v1";
/// MinIO's lock grid route.
pub const LOCK_ROUTE: &str = "/minio/grid/lock/v1";
/// Most clock skew the HTTP upgrade check tolerates (MinIO's 15 minutes).
pub const MAX_HTTP_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);
/// The header carrying the dialer's token.
pub const AUTHORIZATION: &str = "Authorization";
/// The header carrying the dialer's wall clock, in Unix nanoseconds.
pub const MINIO_TIME: &str = "X-Minio-Time";

/// Why an incoming upgrade request was refused. The refused peer is told
/// only [`status`](Self::status), as MinIO answers; the reason is for the
/// acceptor's log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpgradeError {
    /// Not this grid's route: answer 404.
    WrongPath(String),
    /// No `Authorization` header, or an empty one: answer 403.
    MissingToken,
    /// The token check failed, or the header is not text: answer 403.
    BadToken(String),
    /// `X-Minio-Time` missing, malformed, or more than
    /// [`MAX_HTTP_CLOCK_SKEW`] off: answer 403.
    BadTime(String),
}

impl UpgradeError {
    /// The HTTP status to answer with: 404 for a wrong route, else 403.
    pub fn status(&self) -> u16 {
        match self {
            UpgradeError::WrongPath(_) => 404,
            _ => 403,
        }
    }
}

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpgradeError::WrongPath(p) => write!(f, "not a grid route: {p}"),
            UpgradeError::MissingToken => f.write_str("missing bearer token"),
            UpgradeError::BadToken(e) => write!(f, "invalid token: {e}"),
            UpgradeError::BadTime(e) => write!(f, "bad X-Minio-Time: {e}"),
        }
    }
}

impl std::error::Error for UpgradeError {}

/// The WebSocket URL of `route` on `host`: `http://h` → `ws://h/route`,
/// `https://h` → `wss://h/route` (`ws://` and `wss://` hosts are kept).
/// `None` for any other scheme.
pub fn ws_url(host: &str, route: &str) -> Option<String> {
    let (scheme, rest) = host
        .strip_prefix("http://")
        .map(|r| ("ws://", r))
        .or_else(|| host.strip_prefix("https://").map(|r| ("wss://", r)))
        .or_else(|| host.strip_prefix("ws://").map(|r| ("ws://", r)))
        .or_else(|| host.strip_prefix("wss://").map(|r| ("wss://", r)))?;
    Some(format!("{scheme}{}{route}", rest.trim_end_matches('/')))
}

/// The headers a dialer adds to its upgrade request, in the order Go
/// sends them: the bearer token and its wall clock.
pub fn dial_headers(token: &str, wall: Timestamp) -> [(&'static str, String); 2] {
    [
        (AUTHORIZATION, format!("Bearer {token}")),
        (MINIO_TIME, wall.unix_nanos().to_string()),
    ]
}

/// The token of an `Authorization` header as MinIO's extractor takes it:
/// after a case-insensitive `Bearer ` prefix, else the whole value. Only
/// that one space goes: `Bearer  t` gives ` t`, which no token check
/// accepts.
pub fn bearer_token(header: &str) -> &str {
    match header.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => &header[7..],
        _ => header,
    }
}

/// What the acceptor's checks read from an incoming upgrade request.
/// Header values are the raw bytes received (`None`: no such header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpgradeRequest<'a> {
    /// The request path.
    pub path: &'a str,
    /// The [`AUTHORIZATION`] header.
    pub authorization: Option<&'a [u8]>,
    /// The [`MINIO_TIME`] header.
    pub minio_time: Option<&'a [u8]>,
}

/// The acceptor's checks of an upgrade request before it upgrades
/// (docs/protocol.md#transport-upgrade-checks), in MinIO's order: the route, the bearer token (`validate_token` is the
/// application's check), then the dialer's clock against `clock` (this
/// node's wall clock; `None` skips that check).
pub fn check_upgrade(
    request: &UpgradeRequest<'_>,
    route: &str,
    clock: Option<Timestamp>,
    validate_token: impl FnOnce(&str) -> Result<(), String>,
) -> Result<(), UpgradeError> {
    if request.path != route {
        return Err(UpgradeError::WrongPath(request.path.to_owned()));
    }
    let header = request
        .authorization
        .map(|v| header_text(v).ok_or_else(|| UpgradeError::BadToken("not text".into())))
        .transpose()?
        .filter(|v| !v.is_empty())
        .ok_or(UpgradeError::MissingToken)?;
    validate_token(bearer_token(header)).map_err(UpgradeError::BadToken)?;
    let Some(ours) = clock else {
        return Ok(());
    };
    let ns: i64 = request
        .minio_time
        .and_then(header_text)
        .ok_or_else(|| UpgradeError::BadTime("missing".into()))?
        .parse()
        .map_err(|_| UpgradeError::BadTime("not a number".into()))?;
    let skew = ours.abs_diff(Timestamp::from_unix_nanos(ns));
    if skew > MAX_HTTP_CLOCK_SKEW {
        return Err(UpgradeError::BadTime(format!("clock differs by {skew:?}")));
    }
    Ok(())
}

/// A header value as text, if it is what HTTP stacks hand out as one:
/// visible ASCII and tabs only.
fn header_text(value: &[u8]) -> Option<&str> {
    let visible = |b: &u8| (32..127).contains(b) || *b == b'\t';
    if !value.iter().all(visible) {
        return None;
    }
    std::str::from_utf8(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_795_349_118_223_372_618;

    fn request<'a>(auth: Option<&'a str>, time: Option<&'a str>) -> UpgradeRequest<'a> {
        UpgradeRequest {
            path: DEFAULT_ROUTE,
            authorization: auth.map(str::as_bytes),
            minio_time: time.map(str::as_bytes),
        }
    }

    fn check(request: &UpgradeRequest<'_>, clock: Option<Timestamp>) -> Result<(), UpgradeError> {
        check_upgrade(request, DEFAULT_ROUTE, clock, |t| {
            if t == "good" {
                Ok(())
            } else {
                Err(format!("refused {t:?}"))
            }
        })
    }

    #[test]
    fn ws_url_follows_go() {
        assert_eq!(
            ws_url("http://10.0.0.2:9000", DEFAULT_ROUTE).unwrap(),
            "ws://10.0.0.2:9000/minio/grid/v1"
        );
        assert_eq!(
            ws_url("https://a:1/", LOCK_ROUTE).unwrap(),
            "wss://a:1/minio/grid/lock/v1"
        );
        assert_eq!(ws_url("ftp://a", DEFAULT_ROUTE), None);
    }

    #[test]
    fn dial_headers_carry_the_token_and_the_clock() {
        let headers = dial_headers("t0k", Timestamp::from_unix_nanos(T));
        assert_eq!(
            headers,
            [
                ("Authorization", "Bearer t0k".to_owned()),
                ("X-Minio-Time", T.to_string()),
            ]
        );
        // What a dialer sends, an acceptor accepts.
        let [(_, auth), (_, time)] = &headers;
        let req = request(Some(auth), Some(time));
        let got = check_upgrade(
            &req,
            DEFAULT_ROUTE,
            Some(Timestamp::from_unix_nanos(T)),
            |t| {
                if t == "t0k" { Ok(()) } else { Err("no".into()) }
            },
        );
        assert_eq!(got, Ok(()));
    }

    #[test]
    fn bearer_prefix_as_minio_strips_it() {
        assert_eq!(bearer_token("Bearer abc"), "abc");
        assert_eq!(bearer_token("bearer abc"), "abc");
        assert_eq!(bearer_token("BEARER abc"), "abc");
        // A bare token is taken whole.
        assert_eq!(bearer_token("abc.def.ghi"), "abc.def.ghi");
        // Only one space goes.
        assert_eq!(bearer_token("Bearer  abc"), " abc");
        assert_eq!(bearer_token("Bearer "), "");
        assert_eq!(bearer_token("Bearer"), "Bearer");
        assert_eq!(bearer_token("Bearerabc"), "Bearerabc");
        // No panic on a multi-byte character near the prefix.
        assert_eq!(bearer_token("Bearé abc"), "Bearé abc");
    }

    #[test]
    fn checks_run_in_minio_order_with_their_statuses() {
        let now = Timestamp::from_unix_nanos(T);
        let t = T.to_string();
        let mut wrong = request(Some("Bearer good"), Some(&t));
        wrong.path = "/other";
        let e = check(&wrong, Some(now)).unwrap_err();
        assert_eq!(
            (e.status(), e.to_string()),
            (404, "not a grid route: /other".into())
        );
        assert_eq!(
            check(&request(None, Some(&t)), Some(now)),
            Err(UpgradeError::MissingToken)
        );
        assert_eq!(
            check(&request(Some(""), Some(&t)), Some(now)),
            Err(UpgradeError::MissingToken)
        );
        let e = check(&request(Some("Bearer bad"), Some(&t)), Some(now)).unwrap_err();
        assert_eq!(
            (e.status(), e),
            (403, UpgradeError::BadToken("refused \"bad\"".into()))
        );
        // The token is checked before the clock.
        assert!(matches!(
            check(&request(Some("Bearer bad"), None), Some(now)),
            Err(UpgradeError::BadToken(_))
        ));
        assert_eq!(
            check(&request(Some("Bearer good"), Some(&t)), Some(now)),
            Ok(())
        );
        assert_eq!(check(&request(Some("good"), Some(&t)), Some(now)), Ok(()));
    }

    #[test]
    fn header_bytes_that_are_not_text_are_refused() {
        let req = UpgradeRequest {
            path: DEFAULT_ROUTE,
            authorization: Some(b"Bearer g\xc3\xb6od"),
            minio_time: None,
        };
        assert_eq!(
            check(&req, None),
            Err(UpgradeError::BadToken("not text".into()))
        );
        let req = UpgradeRequest {
            authorization: Some(b"Bearer good"),
            minio_time: Some(b"12\x7f"),
            ..req
        };
        assert_eq!(
            check(&req, Some(Timestamp::from_unix_nanos(12))),
            Err(UpgradeError::BadTime("missing".into()))
        );
    }

    #[test]
    fn the_clock_is_checked_within_fifteen_minutes_unless_skipped() {
        let now = Timestamp::from_unix_nanos(T);
        let ok = request(Some("Bearer good"), None);
        assert_eq!(check(&ok, None), Ok(()), "no clock: no time check");
        assert_eq!(
            check(&ok, Some(now)),
            Err(UpgradeError::BadTime("missing".into()))
        );
        let nan = request(Some("Bearer good"), Some("soon"));
        assert_eq!(
            check(&nan, Some(now)),
            Err(UpgradeError::BadTime("not a number".into()))
        );
        let edge = (T - MAX_HTTP_CLOCK_SKEW.as_nanos() as i64).to_string();
        assert_eq!(
            check(&request(Some("Bearer good"), Some(&edge)), Some(now)),
            Ok(())
        );
        let late = (T + MAX_HTTP_CLOCK_SKEW.as_nanos() as i64 + 1).to_string();
        let e = check(&request(Some("Bearer good"), Some(&late)), Some(now)).unwrap_err();
        assert_eq!(
            e,
            UpgradeError::BadTime("clock differs by 900.000000001s".into())
        );
    }
}
