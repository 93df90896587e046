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

use crate::driver::manager::Options;

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
    exp: Option<f64>,
    nbf: Option<f64>,
    iat: Option<f64>,
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn sign(alg: &str, key: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    fn mac<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Option<Vec<u8>> {
        let mut m = <M as KeyInit>::new_from_slice(key).ok()?;
        m.update(data);
        Some(m.finalize().into_bytes().to_vec())
    }
    match alg {
        "HS256" => mac::<Hmac<Sha256>>(key, data),
        "HS384" => mac::<Hmac<Sha384>>(key, data),
        "HS512" => mac::<Hmac<Sha512>>(key, data),
        _ => None,
    }
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
        let sig = sign(
            "HS512",
            self.secret_key.as_bytes(),
            signing_input.as_bytes(),
        )
        .unwrap_or_default();
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// Checks a token as MinIO does: HS256/384/512 signed with the root
    /// secret, `accessKey` or `sub` equal to the root access key, and
    /// `exp`/`nbf`/`iat` (when present) valid at `now`, without leeway.
    pub fn validate(&self, token: &str, now: SystemTime) -> Result<(), String> {
        let token = token.get(..token.len().min(MAX_TOKEN_LEN)).unwrap_or(token);
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
        let expected = sign(
            &header.alg,
            self.secret_key.as_bytes(),
            format!("{h}.{c}").as_bytes(),
        )
        .ok_or_else(|| format!("unsupported signing method {}", header.alg))?;
        let given = decode(s)?;
        // Constant-time comparison of the MAC.
        if given.len() != expected.len()
            || given
                .iter()
                .zip(&expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                != 0
        {
            return Err("signature is invalid".into());
        }
        let claims: Claims =
            serde_json::from_slice(&decode(c)?).map_err(|_| "malformed token claims")?;
        let t = unix_secs(now);
        if claims.exp.is_some_and(|exp| t > exp) {
            return Err("token is expired".into());
        }
        if claims.nbf.is_some_and(|nbf| t < nbf) {
            return Err("token is not valid yet".into());
        }
        if claims.iat.is_some_and(|iat| t < iat) {
            return Err("token used before issued".into());
        }
        if claims.access_key.is_empty() && claims.sub.is_empty() {
            return Err("no access key in token".into());
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
        let nbf = unix_secs(now) as u64 + 3600;
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
}
