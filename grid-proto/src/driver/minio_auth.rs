//! MinIO's inter-node token (docs/protocol.md#transport-minio-token), so a
//! Rust node can join a
//! real MinIO grid: an HS512 JWT signed with the root secret key, carried in
//! `Authorization: Bearer` and in the `Connect` message.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::{Sha256, Sha384, Sha512};

use crate::driver::options::Options;

/// Only this much of a token is looked at, as in MinIO.
const MAX_TOKEN_LEN: usize = 64 * 1024;
/// MinIO's tokens expire in about a hundred years.
const LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Issues and checks MinIO inter-node tokens from the root credentials.
#[derive(Clone)]
pub struct MinioAuth {
    access_key: String,
    secret_key: String,
}

impl std::fmt::Debug for MinioAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MinioAuth")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize, Default)]
struct Claims {
    #[serde(rename = "accessKey", default)]
    access_key: String,
    #[serde(default)]
    sub: String,
    #[serde(default)]
    exp: Option<serde_json::Value>,
    #[serde(default)]
    nbf: Option<serde_json::Value>,
    #[serde(default)]
    iat: Option<serde_json::Value>,
}

/// A time claim as MinIO reads it: an integer number of Unix seconds, 0
/// meaning absent; anything else (a fraction, a string) refuses the token.
fn time_claim(name: &str, value: Option<&serde_json::Value>) -> Result<Option<i64>, String> {
    match value {
        None => Ok(None),
        Some(v) => match v.as_i64() {
            Some(0) => Ok(None),
            Some(secs) => Ok(Some(secs)),
            None => Err(format!("malformed token claims: {name} is not an integer")),
        },
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The MAC of `data` under `alg`, or `None` for an algorithm MinIO does
/// not accept.
fn mac_for(alg: &str, key: &[u8], data: &[u8]) -> Option<Box<dyn DynMac>> {
    fn new<M: Mac + KeyInit + 'static>(key: &[u8], data: &[u8]) -> Option<Box<dyn DynMac>> {
        let mut m = <M as KeyInit>::new_from_slice(key).ok()?;
        m.update(data);
        Some(Box::new(m))
    }
    match alg {
        "HS256" => new::<Hmac<Sha256>>(key, data),
        "HS384" => new::<Hmac<Sha384>>(key, data),
        "HS512" => new::<Hmac<Sha512>>(key, data),
        _ => None,
    }
}

/// The two things done with a MAC here, whatever its hash.
trait DynMac {
    fn sign(self: Box<Self>) -> Vec<u8>;
    /// Constant-time comparison (the MAC crate's own).
    fn verify(self: Box<Self>, tag: &[u8]) -> bool;
}

impl<M: Mac> DynMac for M {
    fn sign(self: Box<Self>) -> Vec<u8> {
        self.finalize().into_bytes().to_vec()
    }

    fn verify(self: Box<Self>, tag: &[u8]) -> bool {
        self.verify_slice(tag).is_ok()
    }
}

#[cfg(test)]
fn sign(alg: &str, key: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    mac_for(alg, key, data).map(DynMac::sign)
}

/// The first `max` bytes of `token`, cut back to a character boundary (a
/// cut inside a multi-byte character would leave no valid string; such a
/// token is not base64 and fails anyway).
fn capped(token: &str, max: usize) -> &str {
    let mut end = token.len().min(max);
    while !token.is_char_boundary(end) {
        end -= 1;
    }
    &token[..end]
}

impl MinioAuth {
    /// From the cluster's root credentials.
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> MinioAuth {
        MinioAuth {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
        }
    }

    /// A token as MinIO issues it: HS512, `accessKey` and `sub` set to the
    /// root access key, expiring in about a hundred years.
    pub fn token(&self, now: SystemTime) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512","typ":"JWT"}"#);
        let exp = (now + LIFETIME)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims =
            serde_json::json!({ "accessKey": self.access_key, "exp": exp, "sub": self.access_key });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        let sig = mac_for(
            "HS512",
            self.secret_key.as_bytes(),
            signing_input.as_bytes(),
        )
        .map(DynMac::sign)
        .unwrap_or_default();
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// Checks a token as MinIO does: HS256/384/512 signed with the root
    /// secret (compared in constant time), `accessKey` or `sub` equal to the
    /// root access key, and `exp`/`nbf`/`iat` integer Unix seconds valid at
    /// `now` without leeway (0 counts as absent). Only the first 64 KiB of
    /// the token are looked at. The error says exactly why, for this node's
    /// log; the peer is told only that its token was refused.
    pub fn validate(&self, token: &str, now: SystemTime) -> Result<(), String> {
        let token = capped(token, MAX_TOKEN_LEN);
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("malformed token".into());
        };
        let decode = |p: &str| {
            URL_SAFE_NO_PAD
                .decode(p)
                .map_err(|_| "malformed token encoding".to_owned())
        };
        let header: Header =
            serde_json::from_slice(&decode(h)?).map_err(|_| "malformed token header")?;
        let claims: Claims =
            serde_json::from_slice(&decode(c)?).map_err(|_| "malformed token claims")?;
        let mac = mac_for(
            &header.alg,
            self.secret_key.as_bytes(),
            format!("{h}.{c}").as_bytes(),
        )
        .ok_or_else(|| format!("unsupported signing method {}", header.alg))?;
        if !mac.verify(&decode(s)?) {
            return Err("signature is invalid".into());
        }
        if claims.access_key.is_empty() && claims.sub.is_empty() {
            return Err("no access key in token".into());
        }
        let t = unix_secs(now);
        if time_claim("exp", claims.exp.as_ref())?.is_some_and(|exp| t >= exp) {
            return Err("token is expired".into());
        }
        if time_claim("nbf", claims.nbf.as_ref())?.is_some_and(|nbf| t < nbf) {
            return Err("token is not valid yet".into());
        }
        if time_claim("iat", claims.iat.as_ref())?.is_some_and(|iat| t < iat) {
            return Err("token used before issued".into());
        }
        if claims.access_key != self.access_key && claims.sub != self.access_key {
            return Err("access key does not match".into());
        }
        Ok(())
    }

    /// Sets `options`' token hooks to issue and check MinIO tokens.
    pub fn apply(&self, options: &mut Options) {
        let issuer = self.clone();
        options.auth_token = std::sync::Arc::new(move |_remote| issuer.token(SystemTime::now()));
        let checker = self.clone();
        options.validate_token =
            std::sync::Arc::new(move |token| checker.validate(token, SystemTime::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_validate_and_tampering_fails() {
        let auth = MinioAuth::new("minioadmin", "minioadmin-secret");
        let now = SystemTime::now();
        let t = auth.token(now);
        assert_eq!(t.matches('.').count(), 2);
        assert!(!t.contains('='));
        auth.validate(&t, now).unwrap();
        assert!(
            MinioAuth::new("minioadmin", "other")
                .validate(&t, now)
                .is_err()
        );
        assert!(
            MinioAuth::new("someone", "minioadmin-secret")
                .validate(&t, now)
                .is_err()
        );
        let mut bad = t.clone();
        bad.push('A');
        assert!(auth.validate(&bad, now).is_err());
        assert!(auth.validate("a.b", now).is_err());
        assert!(
            auth.validate(&t, now + LIFETIME + Duration::from_secs(10))
                .is_err()
        );
    }

    #[test]
    fn accepts_hs256_and_checks_nbf() {
        let auth = MinioAuth::new("ak", "sk");
        let now = SystemTime::now();
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let nbf = unix_secs(now) + 3600;
        let c = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"ak","nbf":{nbf}}}"#));
        let sig = sign("HS256", b"sk", format!("{h}.{c}").as_bytes()).unwrap();
        let token = format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(sig));
        assert_eq!(
            auth.validate(&token, now),
            Err("token is not valid yet".into())
        );
        auth.validate(&token, now + Duration::from_secs(7200))
            .unwrap();
        let none = format!("{}.{c}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#));
        assert!(
            auth.validate(&none, now)
                .unwrap_err()
                .contains("unsupported")
        );
    }

    /// A token signed with `sk` over `claims` (raw JSON).
    fn token_with(claims: &str) -> String {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512","typ":"JWT"}"#);
        let c = URL_SAFE_NO_PAD.encode(claims);
        let sig = sign("HS512", b"sk", format!("{h}.{c}").as_bytes()).unwrap();
        format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    #[test]
    fn time_claims_are_integers_and_zero_is_absent() {
        let auth = MinioAuth::new("ak", "sk");
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        auth.validate(&token_with(r#"{"sub":"ak","exp":0}"#), now)
            .unwrap();
        auth.validate(&token_with(r#"{"sub":"ak","exp":0,"nbf":0,"iat":0}"#), now)
            .unwrap();
        auth.validate(&token_with(r#"{"sub":"ak","exp":1700000001}"#), now)
            .unwrap();
        // Expired from the second `exp` names, as in MinIO's JWT library.
        assert_eq!(
            auth.validate(&token_with(r#"{"sub":"ak","exp":1700000000}"#), now),
            Err("token is expired".into())
        );
        for bad in [
            r#"{"sub":"ak","exp":1.9e9}"#,
            r#"{"sub":"ak","exp":1900000000.5}"#,
            r#"{"sub":"ak","exp":"1900000000"}"#,
            r#"{"sub":"ak","nbf":true}"#,
        ] {
            let e = auth.validate(&token_with(bad), now).unwrap_err();
            assert!(e.contains("not an integer"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_wrong_mac_of_the_right_length_is_refused() {
        let auth = MinioAuth::new("ak", "sk");
        let now = SystemTime::now();
        let good = auth.token(now);
        let (signed, sig) = good.rsplit_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
        raw[63] ^= 1;
        let bad = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(raw));
        assert_eq!(auth.validate(&bad, now), Err("signature is invalid".into()));
        let short = format!("{signed}.{}", URL_SAFE_NO_PAD.encode([0u8; 8]));
        assert_eq!(
            auth.validate(&short, now),
            Err("signature is invalid".into())
        );
    }

    #[test]
    fn only_the_first_64_kib_count_even_inside_a_character() {
        let auth = MinioAuth::new("ak", "sk");
        let now = SystemTime::now();
        let good = auth.token(now);
        // Padding after the token pushes its end past the cap; the cut
        // falls inside a two-byte character: no panic, and the cap holds
        // (the token read is cut short and fails).
        let mut long = "é".repeat(MAX_TOKEN_LEN / 2);
        long.insert(0, 'x');
        assert!(!long.is_char_boundary(MAX_TOKEN_LEN));
        assert!(auth.validate(&long, now).is_err());
        assert_eq!(capped(&long, MAX_TOKEN_LEN).len(), MAX_TOKEN_LEN - 1);
        let beyond = format!("{}{good}", "a".repeat(MAX_TOKEN_LEN));
        assert!(auth.validate(&beyond, now).is_err());
        let padded_after = format!("{good}{}", ".".repeat(MAX_TOKEN_LEN));
        assert_eq!(
            auth.validate(&padded_after, now),
            Err("malformed token".into())
        );
    }
}
