//! Signed links for residents: the pay link `{public_base_url}/pay/{token}` that bills and
//! reminders carry, and the unsubscribe links of reminder e-mails. Both the reminders and the
//! resident pages use this module.
//!
//! A token is `base64url(version ‖ purpose ‖ varint(account id) ‖ expiry (u32 Unix seconds) ‖
//! tag)`, where `tag` is the first 12 bytes of HMAC-SHA256(secret, "meterpay-link" ‖ the bytes
//! before it). It carries the account's internal id (never its account number or a phone) and
//! an expiry; verifying recomputes the tag in constant time and checks the expiry against the
//! `now` passed in. Typical tokens are 27 characters: short enough for an SMS template variable
//! (Alibaba limits a variable to 35 characters). A 96-bit tag is far beyond guessing.
//!
//! The secret: `paylink.secret` when configured; otherwise a random 32-byte secret generated
//! on first start and **persisted in the database** (`app_secrets`, migration 0006), so every
//! instance sharing the database, and every restart of the demo, issues and accepts the same
//! links. Changing the secret invalidates every link already sent.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;

const VERSION: u8 = 1;
const TAG_LEN: usize = 12;
const DOMAIN: &[u8] = b"meterpay-link";

/// What a link lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    /// See and pay the account's open bills.
    Pay,
    /// Stop reminder e-mails for the account.
    UnsubscribeEmail,
    /// Stop reminder SMS for the account.
    UnsubscribeSms,
}

impl LinkPurpose {
    fn byte(self) -> u8 {
        match self {
            LinkPurpose::Pay => 1,
            LinkPurpose::UnsubscribeEmail => 2,
            LinkPurpose::UnsubscribeSms => 3,
        }
    }
    fn from_byte(b: u8) -> Option<LinkPurpose> {
        match b {
            1 => Some(LinkPurpose::Pay),
            2 => Some(LinkPurpose::UnsubscribeEmail),
            3 => Some(LinkPurpose::UnsubscribeSms),
            _ => None,
        }
    }
    fn path(self) -> &'static str {
        match self {
            LinkPurpose::Pay => "pay",
            LinkPurpose::UnsubscribeEmail | LinkPurpose::UnsubscribeSms => "unsubscribe",
        }
    }
}

/// Why a token was refused. Messages are safe to show a resident.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this link is not valid")]
    Malformed,
    #[error("this link is not valid")]
    BadSignature,
    #[error("this link is for something else")]
    WrongPurpose,
    #[error("this link expired on {0}")]
    Expired(DateTime<Utc>),
}

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkClaims {
    pub account_id: i64,
    pub purpose: LinkPurpose,
    pub expires_at: DateTime<Utc>,
}

/// Issues and verifies links with one secret.
#[derive(Clone)]
pub struct LinkSigner {
    secret: SecretSlice<u8>,
    base_url: String,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

impl LinkSigner {
    /// `secret` must be at least 16 bytes; `public_base_url` is `http.public_base_url`.
    pub fn new(secret: Vec<u8>, public_base_url: &str) -> Result<LinkSigner, String> {
        if secret.len() < 16 {
            return Err("paylink.secret must be at least 16 bytes".into());
        }
        Ok(LinkSigner {
            secret: SecretSlice::from(secret),
            base_url: public_base_url.trim_end_matches('/').to_string(),
        })
    }

    fn tag(&self, body: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.expose_secret()).expect("HMAC takes any key length");
        mac.update(DOMAIN);
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&full[..TAG_LEN]);
        out
    }

    /// A token for `account_id`, valid until `expires_at` (whole seconds).
    pub fn token(&self, account_id: i64, purpose: LinkPurpose, expires_at: DateTime<Utc>) -> String {
        let mut body = vec![VERSION, purpose.byte()];
        push_varint(&mut body, account_id.max(0) as u64);
        let exp = expires_at.timestamp().clamp(0, i64::from(u32::MAX)) as u32;
        body.extend_from_slice(&exp.to_be_bytes());
        let tag = self.tag(&body);
        body.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(body)
    }

    /// The full URL: `{base}/pay/{token}` or `{base}/unsubscribe/{token}`.
    pub fn url(&self, account_id: i64, purpose: LinkPurpose, expires_at: DateTime<Utc>) -> String {
        format!(
            "{}/{}/{}",
            self.base_url,
            purpose.path(),
            self.token(account_id, purpose, expires_at)
        )
    }

    /// The pay link for an account, valid for `ttl` from `now`.
    pub fn pay_url(&self, account_id: i64, now: DateTime<Utc>, ttl: Duration) -> String {
        self.url(account_id, LinkPurpose::Pay, now + ttl)
    }

    /// The base URL links start with (what SMS templates write as constant text).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Check a token: its tag, then its purpose, then its expiry at `now`.
    pub fn verify(&self, token: &str, purpose: LinkPurpose, now: DateTime<Utc>) -> Result<LinkClaims, LinkError> {
        if token.len() > 64 {
            return Err(LinkError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| LinkError::Malformed)?;
        if bytes.len() < 2 + 1 + 4 + TAG_LEN || bytes[0] != VERSION {
            return Err(LinkError::Malformed);
        }
        let (body, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.expose_secret()).expect("HMAC takes any key length");
        mac.update(DOMAIN);
        mac.update(body);
        mac.verify_truncated_left(tag).map_err(|_| LinkError::BadSignature)?;
        let found = LinkPurpose::from_byte(body[1]).ok_or(LinkError::Malformed)?;
        let (account, used) = read_varint(&body[2..]).ok_or(LinkError::Malformed)?;
        let rest = &body[2 + used..];
        if rest.len() != 4 {
            return Err(LinkError::Malformed);
        }
        let exp = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let expires_at = DateTime::<Utc>::from_timestamp(i64::from(exp), 0).ok_or(LinkError::Malformed)?;
        if found != purpose {
            return Err(LinkError::WrongPurpose);
        }
        if now >= expires_at {
            return Err(LinkError::Expired(expires_at));
        }
        Ok(LinkClaims {
            account_id: i64::try_from(account).map_err(|_| LinkError::Malformed)?,
            purpose: found,
            expires_at,
        })
    }
}

/// Generate a fresh 32-byte secret, hex-encoded (what `app_secrets` stores).
pub fn generate_secret() -> String {
    use rand::RngCore as _;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn signer() -> LinkSigner {
        LinkSigner::new(b"0123456789abcdef0123456789abcdef".to_vec(), "https://pay.example.cn/").unwrap()
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-07-01T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_pay_link_verifies_to_its_account_until_it_expires() {
        let s = signer();
        let url = s.pay_url(42, t0(), Duration::days(30));
        let token = url
            .strip_prefix("https://pay.example.cn/pay/")
            .expect("base URL without a double slash");
        assert!(token.len() <= 35, "fits an SMS template variable: {}", token.len());
        let claims = s.verify(token, LinkPurpose::Pay, t0() + Duration::days(29)).unwrap();
        assert_eq!(claims.account_id, 42);
        assert_eq!(claims.expires_at, t0() + Duration::days(30));
        assert_eq!(
            s.verify(token, LinkPurpose::Pay, t0() + Duration::days(30)),
            Err(LinkError::Expired(t0() + Duration::days(30)))
        );
    }

    #[test]
    fn an_altered_token_is_refused() {
        let s = signer();
        let token = s.token(42, LinkPurpose::Pay, t0() + Duration::days(1));
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[2] ^= 1; // another account id
        let forged = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(s.verify(&forged, LinkPurpose::Pay, t0()), Err(LinkError::BadSignature));
        // A later expiry with the old tag.
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let n = bytes.len();
        bytes[n - TAG_LEN - 1] ^= 0x40;
        assert_eq!(
            s.verify(&URL_SAFE_NO_PAD.encode(&bytes), LinkPurpose::Pay, t0()),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            s.verify("not-a-token!", LinkPurpose::Pay, t0()),
            Err(LinkError::Malformed)
        );
        assert!(s.verify(&token[..token.len() - 2], LinkPurpose::Pay, t0()).is_err());
    }

    #[test]
    fn a_token_signed_with_another_secret_or_for_another_purpose_is_refused() {
        let other = LinkSigner::new(b"another-secret-of-32-bytes-long!".to_vec(), "https://x").unwrap();
        let token = other.token(42, LinkPurpose::Pay, t0() + Duration::days(1));
        assert_eq!(
            signer().verify(&token, LinkPurpose::Pay, t0()),
            Err(LinkError::BadSignature)
        );
        let unsub = signer().token(42, LinkPurpose::UnsubscribeEmail, t0() + Duration::days(1));
        assert_eq!(
            signer().verify(&unsub, LinkPurpose::Pay, t0()),
            Err(LinkError::WrongPurpose)
        );
        assert!(signer().verify(&unsub, LinkPurpose::UnsubscribeEmail, t0()).is_ok());
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert!(LinkSigner::new(b"short".to_vec(), "https://x").is_err());
        assert_eq!(generate_secret().len(), 64);
        assert_ne!(generate_secret(), generate_secret());
    }

    proptest! {
        #[test]
        fn every_account_id_round_trips(id in 0i64..i64::MAX, days in 1i64..3650) {
            let s = signer();
            let token = s.token(id, LinkPurpose::Pay, t0() + Duration::days(days));
            let c = s.verify(&token, LinkPurpose::Pay, t0()).unwrap();
            prop_assert_eq!(c.account_id, id);
        }
    }
}
