//! Signing (signMethod `01`, version 5.1.0) and the sign string both directions share.
//!
//! The sign string is every field except `signature`, sorted by key in byte order and joined as
//! `key=value&…` with the values raw (not URL-encoded). We sign the lowercase **hex** SHA-256 of
//! that string with SHA256withRSA, so the RSA step hashes the 64 hex characters again (the
//! "double hash" of gateways.md §3.3 and pitfall 12). `certId` is the decimal serial number of the
//! certificate whose key signs.
//!
//! Our key arrives as the PKCS#12 (`.pfx`) file UnionPay's certificate tool exports, with its
//! password; [`SigningIdentity::from_pkcs12`] takes the key and the certificate that belongs to it
//! (matched by public key, not by bag order or `localKeyId`, which some exports omit). The old
//! RC2-40-encrypted test `.pfx` loads as well (p12-keystore's PBES1 support).

use crate::crypto::{self, PrivateKey, PublicKey};

/// Why our signing key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("the PKCS#12 file could not be opened (wrong password, or a damaged or unsupported file): {0}")]
    Pkcs12(String),
    #[error("the PKCS#12 file holds {0} private keys; expected exactly one")]
    KeyCount(usize),
    #[error("the private key is not an RSA key: {0}")]
    NotRsa(String),
    #[error("no certificate in the file belongs to its private key")]
    NoMatchingCertificate,
    #[error("the certificate could not be read: {0}")]
    Certificate(String),
}

/// Our signing key with its certificate: what signs every request. `Debug` never shows the key.
#[derive(Clone)]
pub struct SigningIdentity {
    key: PrivateKey,
    cert_id: String,
    cert_der: Vec<u8>,
    subject: String,
}

impl std::fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningIdentity")
            .field("cert_id", &self.cert_id)
            .field("subject", &self.subject)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl SigningIdentity {
    /// Load from a PKCS#12 file (DER bytes) and its password.
    pub fn from_pkcs12(pfx: &[u8], password: &str) -> Result<Self, SigningKeyError> {
        let archive = p12_keystore::Pkcs12Archive::from_pkcs12(pfx, password)
            .map_err(|e| SigningKeyError::Pkcs12(e.to_string()))?;
        if archive.keys.len() != 1 {
            return Err(SigningKeyError::KeyCount(archive.keys.len()));
        }
        let key = crypto::load_private_key(archive.keys[0].key.as_der())
            .map_err(|e| SigningKeyError::NotRsa(e.to_string()))?;
        let public = key.public_key();
        for bag in &archive.certs {
            let Ok(cert) = <x509_cert::Certificate as der::Decode>::from_der(bag.cert.as_der()) else {
                continue;
            };
            if crypto::public_key_of_certificate(&cert).is_ok_and(|k| k == public) {
                return Self::from_parts(key, &cert);
            }
        }
        Err(SigningKeyError::NoMatchingCertificate)
    }

    /// Load from a PEM (or DER) private key and the certificate that belongs to it, for keys
    /// already converted out of the `.pfx` (e.g. `openssl pkcs12 -nocerts -nodes`).
    pub fn from_pem(private_key: &[u8], certificate: &[u8]) -> Result<Self, SigningKeyError> {
        let key = crypto::load_private_key(private_key).map_err(|e| SigningKeyError::NotRsa(e.to_string()))?;
        let certs = crypto::load_certificates(certificate).map_err(|e| SigningKeyError::Certificate(e.to_string()))?;
        let public = key.public_key();
        let cert = certs
            .iter()
            .find(|c| crypto::public_key_of_certificate(c).is_ok_and(|k| k == public))
            .ok_or(SigningKeyError::NoMatchingCertificate)?;
        Self::from_parts(key, cert)
    }

    fn from_parts(key: PrivateKey, cert: &x509_cert::Certificate) -> Result<Self, SigningKeyError> {
        let cert_der = der::Encode::to_der(cert).map_err(|e| SigningKeyError::Certificate(e.to_string()))?;
        Ok(SigningIdentity {
            key,
            cert_id: decimal_serial(cert.tbs_certificate().serial_number().as_bytes()),
            subject: cert.tbs_certificate().subject().to_string(),
            cert_der,
        })
    }

    /// `certId`: the certificate's serial number in decimal.
    pub fn cert_id(&self) -> &str {
        &self.cert_id
    }

    /// The certificate's subject (RFC 4514 form), for logs and errors.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// The certificate as PEM with `\r\n` line ends, as UnionPay writes `signPubKeyCert`.
    pub fn certificate_pem(&self) -> String {
        let b64 = crypto::b64(&self.cert_der);
        let mut out = String::from("-----BEGIN CERTIFICATE-----\r\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            out.push_str("\r\n");
        }
        out.push_str("-----END CERTIFICATE-----");
        out
    }

    /// The base64 signature over `fields` (their `signature` field, if any, excluded). Requests
    /// drop empty values before signing (`drop_empty`); answers and notifications keep them.
    pub fn signature(&self, fields: &[(String, String)], drop_empty: bool) -> String {
        let digest = crypto::sha256_hex(sign_string(fields, drop_empty).as_bytes());
        self.key.sign_sha256_base64(digest.as_bytes())
    }

    /// Sign a request in place: drops empty values, sets `certId` and appends `signature`.
    pub fn sign_request(&self, fields: &mut Vec<(String, String)>) {
        fields.retain(|(k, v)| !v.is_empty() && k != "signature" && k != "certId");
        fields.push(("certId".into(), self.cert_id.clone()));
        let sig = self.signature(fields, true);
        fields.push(("signature".into(), sig));
    }
}

/// `key=value&…` over every field except `signature`, sorted by key in byte order, values raw.
/// With `drop_empty`, fields whose value is empty are left out (requests); without it they stay as
/// `key=` (verifying what the gateway sent).
pub fn sign_string(fields: &[(String, String)], drop_empty: bool) -> String {
    let mut sorted: Vec<&(String, String)> = fields
        .iter()
        .filter(|(k, v)| k != "signature" && !(drop_empty && v.is_empty()))
        .collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::with_capacity(sorted.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    for (i, (k, v)) in sorted.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// A big-endian unsigned integer (a certificate serial, up to 20 bytes) in decimal.
pub fn decimal_serial(bytes: &[u8]) -> String {
    let mut digits: Vec<u8> = vec![0]; // little-endian base-10 digits
    for &b in bytes {
        let mut carry = b as u32;
        for d in digits.iter_mut() {
            let v = *d as u32 * 256 + carry;
            *d = (v % 10) as u8;
            carry = v / 10;
        }
        while carry > 0 {
            digits.push((carry % 10) as u8);
            carry /= 10;
        }
    }
    while digits.len() > 1 && digits.last() == Some(&0) {
        digits.pop();
    }
    digits.iter().rev().map(|d| char::from(b'0' + d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_sign_string_is_sorted_raw_and_leaves_out_the_signature() {
        let fields = f(&[
            ("txnAmt", "1"),
            ("b", "x y+z&"),
            ("signature", "S"),
            ("accessType", ""),
            ("B", "up"),
        ]);
        assert_eq!(sign_string(&fields, true), "B=up&b=x y+z&&txnAmt=1");
        assert_eq!(sign_string(&fields, false), "B=up&accessType=&b=x y+z&&txnAmt=1");
    }

    #[test]
    fn serials_print_in_decimal_at_any_length() {
        assert_eq!(decimal_serial(&[0x10, 0x46, 0x90, 0x01, 0x49]), "69903319369");
        assert_eq!(decimal_serial(&[0x10, 0x02, 0x64, 0x01, 0x49]), "68759585097");
        assert_eq!(decimal_serial(&[0]), "0");
        assert_eq!(decimal_serial(&[]), "0");
        // 2^128 needs more than u128.
        let mut big = vec![1u8];
        big.extend([0u8; 16]);
        assert_eq!(decimal_serial(&big), "340282366920938463463374607431768211456");
    }
}
