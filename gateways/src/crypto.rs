//! RSA keys in every form the gateways hand out, and the two signature schemes they use.
//!
//! Alipay hands out keys as bare base64 (PKCS#1 or PKCS#8 DER, no PEM armour), as PEM, or as
//! X.509 certificates (certificate mode); WeChat Pay as PEM PKCS#8 keys and X.509 platform
//! certificates, or a bare "WeChat Pay public key" (SPKI); UnionPay as PKCS#12 bundles and DER/PEM
//! certificates. [`load_private_key`] and [`load_public_key`] accept all of these so no caller
//! has to guess.
//!
//! Signing uses `rsa` 0.10, whose private-key operations are blinded (RUSTSEC-2023-0071 does
//! not apply as it did to 0.9). Private keys live only in [`PrivateKey`], which never prints.

use base64::Engine as _;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use sha2::Sha256;

/// Why a key or certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not an RSA key in any recognised form (PEM or bare base64/DER; PKCS#1, PKCS#8, SPKI or X.509): {0}")]
    Unrecognised(String),
    #[error("certificate could not be parsed: {0}")]
    Certificate(String),
}

/// Why a signature did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("signature is not valid base64")]
    BadEncoding,
    #[error("signature does not match the signed bytes")]
    Mismatch,
}

/// An RSA private key that signs our outbound requests. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct PrivateKey(rsa::PrivateKey);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// An RSA public key that verifies a gateway's (or, in the sandbox, a merchant's) signatures.
///
/// Verification of SHA-256 signatures goes through `ring` when the key is 2048 bits or more:
/// `rsa` 0.10's public operation (crypto-bigint) takes ~150 µs per RSA-2048 check here, `ring`'s a
/// fraction of that, and every callback is verified (target ≥ 10,000/s on one core). Public-key
/// operations handle no secret, so constant-time arithmetic is not what matters for them; `rsa`
/// still does every private-key operation (blinded), and checks keys `ring` refuses.
#[derive(Clone, Debug, PartialEq)]
pub struct PublicKey {
    key: rsa::PublicKey,
    /// PKCS#1 `RSAPublicKey` DER for `ring`; None when `ring` does not take the key size.
    ring_der: Option<Vec<u8>>,
}

fn ring_der_of(key: &rsa::PublicKey) -> Option<Vec<u8>> {
    use rsa::traits::PublicKeyParts;
    if key.n_bits_precision() < 2048 {
        return None;
    }
    let spki = rsa::pkcs8::EncodePublicKey::to_public_key_der(key).ok()?;
    let info = spki::SubjectPublicKeyInfoRef::try_from(spki.as_bytes()).ok()?;
    info.subject_public_key.as_bytes().map(<[u8]>::to_vec)
}

impl PrivateKey {
    pub fn inner(&self) -> &rsa::PrivateKey {
        &self.0
    }
    pub fn from_rsa(key: rsa::PrivateKey) -> Self {
        Self(key)
    }
    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_rsa(self.0.to_public_key())
    }
    /// RSASSA-PKCS1-v1_5 with SHA-256 ("RSA2" at Alipay, "SHA256-RSA2048" at WeChat Pay).
    pub fn sign_sha256(&self, message: &[u8]) -> Vec<u8> {
        let key = SigningKey::<Sha256>::new(self.0.clone());
        key.sign(message).to_vec()
    }
    /// RSASSA-PKCS1-v1_5 with SHA-1 (UnionPay 5.0.0 and Alipay "RSA"; verification only in practice).
    pub fn sign_sha1(&self, message: &[u8]) -> Vec<u8> {
        let key = SigningKey::<sha1::Sha1>::new(self.0.clone());
        key.sign(message).to_vec()
    }
    /// [`Self::sign_sha256`], base64-encoded as every gateway transmits it.
    pub fn sign_sha256_base64(&self, message: &[u8]) -> String {
        b64(&self.sign_sha256(message))
    }
}

impl PublicKey {
    pub fn inner(&self) -> &rsa::PublicKey {
        &self.key
    }
    pub fn from_rsa(key: rsa::PublicKey) -> Self {
        let ring_der = ring_der_of(&key);
        Self { key, ring_der }
    }
    pub fn verify_sha256(&self, message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        if let Some(der) = &self.ring_der {
            return ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, der)
                .verify(message, signature)
                .map_err(|_| SignatureError::Mismatch);
        }
        self.verify_sha256_rsa(message, signature)
    }
    /// The same check with `rsa` only (for keys `ring` refuses, and to test that both agree).
    pub fn verify_sha256_rsa(&self, message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        let sig = Signature::try_from(signature).map_err(|_| SignatureError::Mismatch)?;
        VerifyingKey::<Sha256>::new(self.key.clone())
            .verify(message, &sig)
            .map_err(|_| SignatureError::Mismatch)
    }
    pub fn verify_sha1(&self, message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        let sig = Signature::try_from(signature).map_err(|_| SignatureError::Mismatch)?;
        VerifyingKey::<sha1::Sha1>::new(self.key.clone())
            .verify(message, &sig)
            .map_err(|_| SignatureError::Mismatch)
    }
    /// Verify a base64 signature (standard alphabet, padding as sent; whitespace tolerated).
    pub fn verify_sha256_base64(&self, message: &[u8], signature_b64: &str) -> Result<(), SignatureError> {
        let sig = unb64(signature_b64).ok_or(SignatureError::BadEncoding)?;
        self.verify_sha256(message, &sig)
    }
}

/// Standard base64 with padding.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decode standard base64, ignoring ASCII whitespace (keys and signatures are often wrapped).
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(compact).ok()
}

/// The DER blocks in a text that is either PEM (one or more blocks) or bare base64, or the bytes
/// themselves when they are already DER. Returns (label, der) pairs; label is empty for bare input.
pub fn der_blocks(input: &[u8]) -> Vec<(String, Vec<u8>)> {
    if let Ok(text) = std::str::from_utf8(input) {
        if text.contains("-----BEGIN ") {
            let mut out = Vec::new();
            let mut rest = text;
            while let Some(start) = rest.find("-----BEGIN ") {
                let after = &rest[start + 11..];
                let Some(label_end) = after.find("-----") else { break };
                let label = after[..label_end].to_string();
                let body_start = label_end + 5;
                let end_marker = format!("-----END {label}-----");
                let Some(end) = after.find(&end_marker) else { break };
                let body: String = after[body_start..end]
                    .lines()
                    .filter(|l| !l.contains(':')) // drop RFC 1421 headers such as Proc-Type
                    .collect();
                if let Some(der) = unb64(&body) {
                    out.push((label, der));
                }
                rest = &after[end + end_marker.len()..];
            }
            return out;
        }
        if let Some(der) = unb64(text.trim()) {
            return vec![(String::new(), der)];
        }
    }
    vec![(String::new(), input.to_vec())]
}

/// Load an RSA private key from PEM (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`), from
/// bare base64 of either DER form (Alipay's key tool), or from raw DER.
pub fn load_private_key(input: &[u8]) -> Result<PrivateKey, KeyError> {
    for (_label, der) in der_blocks(input) {
        if let Ok(k) = rsa::PrivateKey::from_pkcs8_der(&der) {
            return Ok(PrivateKey(k));
        }
        if let Ok(k) = rsa::PrivateKey::from_pkcs1_der(&der) {
            return Ok(PrivateKey(k));
        }
    }
    Err(KeyError::Unrecognised(
        "no PKCS#1 or PKCS#8 RSA private key found".into(),
    ))
}

/// Load an RSA public key from PEM or bare base64 or DER of: SPKI (`PUBLIC KEY`), PKCS#1
/// (`RSA PUBLIC KEY`), or an X.509 certificate (the key inside it; the first certificate of a chain).
pub fn load_public_key(input: &[u8]) -> Result<PublicKey, KeyError> {
    for (_label, der) in der_blocks(input) {
        if let Ok(k) = rsa::PublicKey::from_public_key_der(&der) {
            return Ok(PublicKey::from_rsa(k));
        }
        if let Ok(k) = rsa::PublicKey::from_pkcs1_der(&der) {
            return Ok(PublicKey::from_rsa(k));
        }
        if let Ok(cert) = <x509_cert::Certificate as der::Decode>::from_der(&der) {
            return public_key_of_certificate(&cert);
        }
    }
    Err(KeyError::Unrecognised(
        "no SPKI, PKCS#1 or X.509 RSA public key found".into(),
    ))
}

/// The RSA public key inside a certificate.
pub fn public_key_of_certificate(cert: &x509_cert::Certificate) -> Result<PublicKey, KeyError> {
    let spki = der::Encode::to_der(cert.tbs_certificate().subject_public_key_info())
        .map_err(|e| KeyError::Certificate(e.to_string()))?;
    rsa::PublicKey::from_public_key_der(&spki)
        .map(PublicKey::from_rsa)
        .map_err(|e| KeyError::Certificate(format!("certificate key is not RSA: {e}")))
}

/// Every X.509 certificate in a PEM bundle, bare base64 or DER input, in order.
pub fn load_certificates(input: &[u8]) -> Result<Vec<x509_cert::Certificate>, KeyError> {
    let mut out = Vec::new();
    for (_label, der) in der_blocks(input) {
        match <x509_cert::Certificate as der::Decode>::from_der(&der) {
            Ok(c) => out.push(c),
            Err(e) => return Err(KeyError::Certificate(e.to_string())),
        }
    }
    if out.is_empty() {
        return Err(KeyError::Certificate("no certificate found".into()));
    }
    Ok(out)
}

/// SHA-256 as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod verify_tests {
    use super::*;

    #[test]
    fn ring_and_rsa_agree_on_good_and_bad_signatures() {
        let key = load_private_key(include_bytes!("../../fixtures/sandbox/core-test-private.pem")).expect("test key");
        let public = key.public_key();
        assert!(public.ring_der.is_some(), "a 2048-bit key is checked by ring");
        let msg = b"out_trade_no=W20261201000001&total_amount=88.80";
        let sig = key.sign_sha256(msg);
        assert_eq!(public.verify_sha256(msg, &sig), Ok(()));
        assert_eq!(public.verify_sha256_rsa(msg, &sig), Ok(()));
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert_eq!(public.verify_sha256(msg, &bad), Err(SignatureError::Mismatch));
        assert_eq!(public.verify_sha256_rsa(msg, &bad), Err(SignatureError::Mismatch));
        assert_eq!(
            public.verify_sha256(b"out_trade_no=W20261201000001&total_amount=88.81", &sig),
            Err(SignatureError::Mismatch)
        );
    }
}
