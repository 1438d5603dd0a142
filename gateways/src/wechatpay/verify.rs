//! Verifying what WeChat Pay signs: responses and notifications, over the exact body bytes, with
//! the key the `Wechatpay-Serial` header names, inside a five-minute timestamp window.
//!
//! Two kinds of key (gateways.md §2.4), both held in one [`WechatPayKeys`]:
//! - **platform certificates**, keyed by their serial (upper-case hex, as in the header). Several
//!   are trusted at once: during a rotation the old and the new certificate are both valid and
//!   WeChat Pay may sign with either. A certificate is only used inside its validity period.
//! - the **WeChat Pay public key** (public-key mode), named by its id `PUB_KEY_ID_…`.
//!
//! The steps, each with its own error (so `meterpay notify verify` can say exactly what failed):
//! headers present → signature type supported → timestamp inside the window → key selected by
//! serial → signature over `timestamp\nnonce\nbody\n`.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};

use super::sign::{response_message, SCHEME};
use crate::crypto::{load_certificates, public_key_of_certificate, unb64, KeyError, PublicKey};
use crate::gateway::NotifyError;

/// WeChat Pay's window: a timestamp `|now − ts| ≥ 300 s` is refused (wechatpay-go `FiveMinute`).
pub const TIMESTAMP_WINDOW_SECS: i64 = 300;

/// The prefix of WeChat Pay's deliberate signature probes: such requests must fail verification.
pub const SIGNATURE_PROBE_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// The prefix of a WeChat Pay public-key id in `Wechatpay-Serial`.
pub const PUBLIC_KEY_ID_PREFIX: &str = "PUB_KEY_ID_";

/// A public key ready for fast verification. `rsa` 0.10 (crypto-bigint) takes ~150 µs per
/// RSA-2048 public operation; `ring`'s takes a fraction of that, and a callback endpoint verifies
/// every notification (target ≥ 10,000/s on one core). Keys `ring` does not take (under 2048
/// bits) are checked with `rsa`.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyingKey {
    key: PublicKey,
    /// PKCS#1 `RSAPublicKey` DER, for `ring` (None when `ring` refuses the key size).
    pkcs1: Option<Vec<u8>>,
}

impl VerifyingKey {
    pub fn new(key: PublicKey) -> VerifyingKey {
        use rsa::traits::PublicKeyParts;
        let pkcs1 = (key.inner().n_bits_precision() >= 2048)
            .then(|| {
                let spki = rsa::pkcs8::EncodePublicKey::to_public_key_der(key.inner()).ok()?;
                let info = spki::SubjectPublicKeyInfoRef::try_from(spki.as_bytes()).ok()?;
                info.subject_public_key.as_bytes().map(<[u8]>::to_vec)
            })
            .flatten();
        VerifyingKey { key, pkcs1 }
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256.
    pub fn verify_sha256(&self, message: &[u8], signature: &[u8]) -> Result<(), crate::crypto::SignatureError> {
        match &self.pkcs1 {
            Some(der) => ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, der)
                .verify(message, signature)
                .map_err(|_| crate::crypto::SignatureError::Mismatch),
            None => self.key.verify_sha256(message, signature),
        }
    }
}

/// A platform certificate, as trusted for verification.
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformCertificate {
    /// Upper-case hex of the X.509 serial number, no leading zero bytes (as `Wechatpay-Serial`).
    pub serial_no: String,
    pub key: PublicKey,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

/// Upper-case hex of a certificate's serial, without the sign byte DER adds to a high first bit.
pub fn serial_hex(cert: &x509_cert::Certificate) -> String {
    let bytes = cert.tbs_certificate().serial_number().as_bytes();
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    hex::encode_upper(&bytes[first..])
}

fn x509_time(t: &x509_cert::time::Time) -> DateTime<Utc> {
    let secs = t.to_unix_duration().as_secs() as i64;
    Utc.timestamp_opt(secs, 0).single().unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl PlatformCertificate {
    pub fn from_x509(cert: &x509_cert::Certificate) -> Result<PlatformCertificate, KeyError> {
        let v = cert.tbs_certificate().validity();
        Ok(PlatformCertificate {
            serial_no: serial_hex(cert),
            key: public_key_of_certificate(cert)?,
            not_before: x509_time(&v.not_before),
            not_after: x509_time(&v.not_after),
            der: der::Encode::to_der(cert).map_err(|e| KeyError::Certificate(e.to_string()))?,
        })
    }

    /// Every certificate in PEM (one or a bundle), bare base64 or DER.
    pub fn parse_all(input: &[u8]) -> Result<Vec<PlatformCertificate>, KeyError> {
        load_certificates(input)?
            .iter()
            .map(PlatformCertificate::from_x509)
            .collect()
    }

    pub fn is_valid_at(&self, now: DateTime<Utc>) -> bool {
        self.not_before <= now && now < self.not_after
    }

    /// Check that `ca` issued this certificate (issuer name and a SHA256withRSA signature).
    pub fn check_issued_by(&self, ca: &x509_cert::Certificate) -> Result<(), String> {
        let cert = <x509_cert::Certificate as der::Decode>::from_der(&self.der).map_err(|e| e.to_string())?;
        if cert.tbs_certificate().issuer() != ca.tbs_certificate().subject() {
            return Err(format!(
                "certificate {} was issued by {}, not by the trusted CA {}",
                self.serial_no,
                cert.tbs_certificate().issuer(),
                ca.tbs_certificate().subject()
            ));
        }
        const SHA256_WITH_RSA: der::asn1::ObjectIdentifier =
            der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
        if cert.signature_algorithm().oid != SHA256_WITH_RSA {
            return Err(format!(
                "certificate {} is signed with {}, not SHA256withRSA",
                self.serial_no,
                cert.signature_algorithm().oid
            ));
        }
        let tbs = der::Encode::to_der(cert.tbs_certificate()).map_err(|e| e.to_string())?;
        let sig = cert
            .signature()
            .as_bytes()
            .ok_or_else(|| "the certificate's signature has unused bits".to_string())?;
        let ca_key = public_key_of_certificate(ca).map_err(|e| e.to_string())?;
        ca_key.verify_sha256(&tbs, sig).map_err(|_| {
            format!(
                "certificate {}'s signature does not verify with the trusted CA",
                self.serial_no
            )
        })
    }
}

/// The headers WeChat Pay signs with, as found on a response or a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedHeaders<'a> {
    pub timestamp: &'a str,
    pub nonce: &'a str,
    pub signature: &'a str,
    pub serial: &'a str,
    pub signature_type: Option<&'a str>,
}

impl<'a> SignedHeaders<'a> {
    /// Collect the `Wechatpay-*` headers through a case-insensitive lookup.
    pub fn from_lookup(get: impl Fn(&str) -> Option<&'a str>) -> Result<SignedHeaders<'a>, NotifyError> {
        let need = |name: &str| {
            get(name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| NotifyError::MissingSignature(format!("header {name} is missing")))
        };
        Ok(SignedHeaders {
            signature: need("Wechatpay-Signature")?,
            timestamp: need("Wechatpay-Timestamp")?,
            nonce: need("Wechatpay-Nonce")?,
            serial: need("Wechatpay-Serial")?,
            signature_type: get("Wechatpay-Signature-Type").map(str::trim),
        })
    }
}

/// The keys one merchant trusts for WeChat Pay's signatures.
#[derive(Debug, Clone, Default)]
pub struct WechatPayKeys {
    certificates: HashMap<String, (PlatformCertificate, VerifyingKey)>,
    public_key: Option<(String, VerifyingKey)>,
    /// A key given with no id (`meterpay notify verify --gateway-key` with a bare public key):
    /// tried whatever the serial says, since the operator named the key explicitly.
    unnamed: Option<VerifyingKey>,
}

/// Which key a serial selects.
#[derive(Debug)]
pub enum KeyChoice<'a> {
    Key(&'a VerifyingKey),
    /// We hold no such key; for a certificate serial, downloading the certificates may help.
    Unknown {
        refreshable: bool,
        detail: String,
    },
    /// We know the key but it may not be used now (an expired certificate).
    Unusable(String),
}

impl WechatPayKeys {
    pub fn new() -> WechatPayKeys {
        WechatPayKeys::default()
    }

    /// Trust these platform certificates (in addition to those already trusted).
    pub fn add_certificates(&mut self, certs: impl IntoIterator<Item = PlatformCertificate>) {
        for c in certs {
            let v = VerifyingKey::new(c.key.clone());
            self.certificates.insert(c.serial_no.to_ascii_uppercase(), (c, v));
        }
    }

    /// Trust exactly these certificates from now on (after a download), keeping `keep` too.
    pub fn replace_certificates(&mut self, certs: Vec<PlatformCertificate>, keep: &[PlatformCertificate]) {
        self.certificates.clear();
        self.add_certificates(keep.iter().cloned());
        self.add_certificates(certs);
    }

    /// WeChat Pay public-key mode: the key and its id `PUB_KEY_ID_…`.
    pub fn set_public_key(&mut self, key_id: &str, key: PublicKey) {
        self.public_key = Some((key_id.trim().to_string(), VerifyingKey::new(key)));
    }

    pub fn set_unnamed_key(&mut self, key: PublicKey) {
        self.unnamed = Some(VerifyingKey::new(key));
    }

    /// Serials of the trusted certificates, sorted.
    pub fn certificate_serials(&self) -> Vec<String> {
        let mut v: Vec<String> = self.certificates.keys().cloned().collect();
        v.sort();
        v
    }

    pub fn certificates(&self) -> impl Iterator<Item = &PlatformCertificate> {
        self.certificates.values().map(|(c, _)| c)
    }

    pub fn is_empty(&self) -> bool {
        self.certificates.is_empty() && self.public_key.is_none() && self.unnamed.is_none()
    }

    /// The key `serial` names, if it may be used at `now`.
    pub fn key_for(&self, serial: &str, now: DateTime<Utc>) -> KeyChoice<'_> {
        if let Some((id, key)) = &self.public_key {
            if id == serial {
                return KeyChoice::Key(key);
            }
        }
        if let Some((c, v)) = self.certificates.get(&serial.to_ascii_uppercase()) {
            return if c.is_valid_at(now) {
                KeyChoice::Key(v)
            } else {
                KeyChoice::Unusable(format!(
                    "platform certificate {} is valid only from {} to {}",
                    c.serial_no, c.not_before, c.not_after
                ))
            };
        }
        if let Some(k) = &self.unnamed {
            return KeyChoice::Key(k);
        }
        if serial.starts_with(PUBLIC_KEY_ID_PREFIX) {
            let configured = match &self.public_key {
                Some((id, _)) => format!("the configured one is {id}"),
                None => "no WeChat Pay public key is configured".to_string(),
            };
            return KeyChoice::Unknown {
                refreshable: false,
                detail: format!("WeChat Pay public key {serial} is not ours ({configured})"),
            };
        }
        KeyChoice::Unknown {
            refreshable: true,
            detail: format!(
                "no platform certificate with serial {serial} (trusted: {})",
                if self.certificates.is_empty() {
                    "none".to_string()
                } else {
                    self.certificate_serials().join(", ")
                }
            ),
        }
    }

    /// Verify a response or notification over its raw body.
    pub fn verify(&self, h: &SignedHeaders<'_>, body: &[u8], now: DateTime<Utc>) -> Result<(), NotifyError> {
        if let Some(t) = h.signature_type {
            if !t.is_empty() && t != SCHEME {
                return Err(NotifyError::BadSignature(format!(
                    "signature type {t:?} is not {SCHEME}"
                )));
            }
        }
        let ts: i64 = h.timestamp.parse().map_err(|_| {
            NotifyError::Malformed(format!("Wechatpay-Timestamp {:?} is not epoch seconds", h.timestamp))
        })?;
        if (now.timestamp() - ts).abs() >= TIMESTAMP_WINDOW_SECS {
            return Err(NotifyError::StaleTimestamp {
                timestamp: ts,
                window_secs: TIMESTAMP_WINDOW_SECS,
            });
        }
        let key = match self.key_for(h.serial, now) {
            KeyChoice::Key(k) => k,
            KeyChoice::Unknown { detail, .. } => return Err(NotifyError::UnknownKey(detail)),
            KeyChoice::Unusable(detail) => return Err(NotifyError::BadSignature(detail)),
        };
        if h.signature.starts_with(SIGNATURE_PROBE_PREFIX) {
            return Err(NotifyError::BadSignature(format!(
                "a WeChat Pay signature probe ({SIGNATURE_PROBE_PREFIX}…): refused, as WeChat Pay expects"
            )));
        }
        let sig = unb64(h.signature)
            .ok_or_else(|| NotifyError::BadSignature("Wechatpay-Signature is not valid base64".into()))?;
        key.verify_sha256(&response_message(h.timestamp, h.nonce, body), &sig)
            .map_err(|_| {
                NotifyError::BadSignature(format!(
                    "the signature does not match the body and headers under the key {}",
                    h.serial
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::load_private_key;

    /// A 1024-bit test key (openssl), which `ring` refuses, so `rsa` checks it.
    const SMALL_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIICdwIBADANBgkqhkiG9w0BAQEFAASCAmEwggJdAgEAAoGBAL7pRz7LKwBgY3uh\nGT+oafvgLPZVc8h2y8lAjL+qERj3O9BugEuffnI96k3+1n0rxQOOqe4+vSrxO0ep\nuI2pPF9YOBTqnyQnkkGQHbFyA0L6rOQHCEvQbK6NJZcFSUUMejpfKHAFGHkfrgc5\nGMb7bYafStRySTXUYYAhABSN1/xdAgMBAAECgYEAo6avFwnsA7ecr9aqISKKL4q8\noDEiPl5vVEZMIOR1IZSVppeCzNCdAOtIVbG1RblmeiUqT/tiB1Sgv06i0HSZNZjT\nAnyNLEV+WDgmxaTo22/nlOAGEAdUHnXbK2lrKPkMS3IofvSIlshM5ZxuZIijNoDS\naeN5xPAzTJ/Atqha4SECQQD2fufOFXNIha9DYmdTxZrmlgVJaABOTNA2AhmLKlOM\nO2mqt7O89lb2Mz7Ac+1JnqrPJVZsFrLbk2GhFJCX9RwlAkEAxkW2h71W1XDAOLad\neBq9g9nSoouFHUfKyqN5FN+3ET5X+SdQlbF2rJKqf9EBq/n2HE5BNp/pL+DZQNxO\nrmxN2QJBAK79BpjRt4ariPGAYTQiW0YJCHXFRDpR45oDwZh/EtLBttEAGrQx+ShM\n1uaPJcwWvNHTgte3AYBJz4wn6kJGOpUCQGhEANkhGKjlwjAQ2H5wkXjk83/HHxlm\nx54ImYQAoaTPxDOiGR6fVGksN70/jEGEEYiRHno7XcVv2M/jCv1utwECQGNO0Hto\nqy2bLuhdATbavDMxanVO82OujkQH2inZYtsZ9sDDRFy1pgPYI3AIsguegDevssZ1\nbwXPZ7Xq1QrCFOE=\n-----END PRIVATE KEY-----";

    #[test]
    fn ring_and_the_rsa_fallback_agree_on_good_and_bad_signatures() {
        let big = load_private_key(include_bytes!("../../../fixtures/wechatpay/merchant_apiclient_key.pem")).unwrap();
        let small = load_private_key(SMALL_KEY.as_bytes()).unwrap();
        for (key, uses_ring) in [(big, true), (small, false)] {
            let v = VerifyingKey::new(key.public_key());
            assert_eq!(v.pkcs1.is_some(), uses_ring);
            let sig = key.sign_sha256(b"1764554400\nNONCE\n{}\n");
            assert!(v.verify_sha256(b"1764554400\nNONCE\n{}\n", &sig).is_ok());
            assert!(v.verify_sha256(b"1764554400\nNONCE\n{ }\n", &sig).is_err());
            let mut bad = sig.clone();
            bad[7] ^= 1;
            assert!(v.verify_sha256(b"1764554400\nNONCE\n{}\n", &bad).is_err());
            assert!(v.verify_sha256(b"1764554400\nNONCE\n{}\n", &sig[1..]).is_err());
        }
    }
}
