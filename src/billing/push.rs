//! The meter concentrators' request signature for `POST /api/v1/readings`.
//!
//! Each device has a key id and a 256-bit secret. A request carries three headers:
//!
//! | header | value |
//! |---|---|
//! | `X-Meterpay-Key-Id` | the device's key id |
//! | `X-Meterpay-Timestamp` | Unix seconds when the request was signed |
//! | `X-Meterpay-Signature` | lowercase hex HMAC-SHA256(secret, string-to-sign) |
//!
//! The string to sign is four lines joined by `\n` (no trailing newline):
//! `METHOD`, the request path (e.g. `/api/v1/readings`), the timestamp, and the lowercase hex
//! SHA-256 of the raw body. A timestamp more than [`WINDOW_SECS`] from the server's clock is
//! refused, and so is a signature seen before (the replay guard remembers signatures for twice
//! the window).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const HEADER_KEY_ID: &str = "x-meterpay-key-id";
pub const HEADER_TIMESTAMP: &str = "x-meterpay-timestamp";
pub const HEADER_SIGNATURE: &str = "x-meterpay-signature";
/// Allowed clock difference, seconds.
pub const WINDOW_SECS: i64 = 300;

type HmacSha256 = Hmac<Sha256>;

/// The exact bytes that are signed.
pub fn string_to_sign(method: &str, path: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "{}\n{}\n{}\n{}",
        method.to_ascii_uppercase(),
        path,
        timestamp,
        hex::encode(Sha256::digest(body))
    )
}

/// Sign as a device does (used by the demo, the tests and device integrators).
pub fn sign(secret: &[u8], method: &str, path: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(string_to_sign(method, path, timestamp, body).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A new device's key id and secret (hex of 32 random bytes).
pub fn new_device_credentials() -> (String, String) {
    use rand::Rng;
    let mut rng = rand::rng();
    let key_id = format!("dev_{}", hex::encode(rng.random::<[u8; 8]>()));
    let secret = hex::encode(rng.random::<[u8; 32]>());
    (key_id, secret)
}

/// Why a push was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushAuthError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("unknown or inactive device key id")]
    UnknownDevice,
    #[error("timestamp {0} is not Unix seconds")]
    BadTimestamp(String),
    #[error("timestamp is {0} s from the server's clock; at most {WINDOW_SECS} s is allowed")]
    StaleTimestamp(i64),
    #[error("signature is not hex")]
    BadSignatureEncoding,
    #[error("signature does not match the request")]
    Mismatch,
    #[error("this signature was already used (replayed request)")]
    Replayed,
}

/// Verify a request's signature (constant-time) and its timestamp window. The replay check is
/// the caller's (it needs the store).
pub fn verify(
    secret: &[u8],
    method: &str,
    path: &str,
    timestamp: &str,
    signature_hex: &str,
    body: &[u8],
    now_unix: i64,
) -> Result<i64, PushAuthError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| PushAuthError::BadTimestamp(timestamp.to_string()))?;
    let skew = (now_unix - ts).abs();
    if skew > WINDOW_SECS {
        return Err(PushAuthError::StaleTimestamp(skew));
    }
    let sig = hex::decode(signature_hex.trim()).map_err(|_| PushAuthError::BadSignatureEncoding)?;
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(string_to_sign(method, path, ts, body).as_bytes());
    mac.verify_slice(&sig).map_err(|_| PushAuthError::Mismatch)?;
    Ok(ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_verifies_and_any_changed_part_does_not() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let body = br#"{"readings":[]}"#;
        let sig = sign(secret, "POST", "/api/v1/readings", 1_700_000_000, body);
        assert_eq!(
            verify(
                secret,
                "POST",
                "/api/v1/readings",
                "1700000000",
                &sig,
                body,
                1_700_000_010
            ),
            Ok(1_700_000_000)
        );
        assert_eq!(
            verify(
                secret,
                "POST",
                "/api/v1/readings",
                "1700000000",
                &sig,
                br#"{"readings":[ ]}"#,
                1_700_000_010
            ),
            Err(PushAuthError::Mismatch)
        );
        assert_eq!(
            verify(secret, "POST", "/api/v1/other", "1700000000", &sig, body, 1_700_000_010),
            Err(PushAuthError::Mismatch)
        );
        assert_eq!(
            verify(
                b"another key",
                "POST",
                "/api/v1/readings",
                "1700000000",
                &sig,
                body,
                1_700_000_010
            ),
            Err(PushAuthError::Mismatch)
        );
        assert_eq!(
            verify(
                secret,
                "POST",
                "/api/v1/readings",
                "1700000000",
                &sig,
                body,
                1_700_000_301
            ),
            Err(PushAuthError::StaleTimestamp(301))
        );
        assert_eq!(
            verify(secret, "POST", "/api/v1/readings", "soon", &sig, body, 1_700_000_000),
            Err(PushAuthError::BadTimestamp("soon".into()))
        );
    }

    #[test]
    fn the_string_to_sign_is_documented_exactly() {
        assert_eq!(
            string_to_sign("post", "/api/v1/readings", 42, b""),
            "POST\n/api/v1/readings\n42\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
