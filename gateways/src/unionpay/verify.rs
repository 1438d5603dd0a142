//! Verifying what UnionPay sends: synchronous answers and notifications (5.1.0).
//!
//! Every signed message carries the certificate that signed it (`signPubKeyCert`). A certificate
//! is never trusted because it is embedded: [`TrustStore::signer_key`] accepts it only when
//!
//! 1. it is issued by the configured middle certificate (issuer name equal to the middle's
//!    subject, and its signature verifies with the middle's key), the middle itself having been
//!    checked at start-up to be issued by the configured root;
//! 2. it, the middle and the root are all within their validity at `now`;
//! 3. the third `@`-separated element of its subject CN names UnionPay: `中国银联股份有限公司`
//!    in production; on the test environment also `00040000:SIGN` (what UnionPay's test signing
//!    certificates carry). This is the official SDK's check (`getIdentitiesFromCertficate`); the
//!    SDK checks no OU and neither do we. It matters because a merchant certificate — ours
//!    included — chains to the same CFCA middle: without the CN check anyone holding a merchant
//!    certificate could sign "notifications".
//!
//! Validated certificates are cached by their PEM text (with their validity, re-checked on every
//! use), so a steady stream of notifications costs one RSA verification each.
//!
//! Then the message: drop `signature`, sort, join `key=value&…` keeping empty values as received,
//! SHA-256 hex, and verify the base64 `signature` over those 64 hex characters with the
//! certificate's key ([`verify_fields`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use der::Decode;
use x509_cert::Certificate;

use super::sign::sign_string;
use crate::crypto::{self, PublicKey};
use crate::gateway::NotifyError;

/// The CN element UnionPay's production signing certificates carry.
pub const UNIONPAY_CN: &str = "中国银联股份有限公司";
/// The CN element UnionPay's test-environment signing certificates carry.
pub const TEST_SIGNER_CN: &str = "00040000:SIGN";

const SHA1_WITH_RSA: &str = "1.2.840.113549.1.1.5";
const SHA256_WITH_RSA: &str = "1.2.840.113549.1.1.11";
const CACHE_LIMIT: usize = 16;

/// Which UnionPay the merchant talks to; decides which signer CN is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnionPayEnvironment {
    /// `gateway.95516.com`: only `中国银联股份有限公司` signs.
    Production,
    /// `gateway.test.95516.com` (and the sandbox): `00040000:SIGN` is accepted too, as the
    /// official SDK does with `ifValidateCNName=false`.
    Test,
}

impl UnionPayEnvironment {
    pub fn accepts_signer(self, cn_element: &str) -> bool {
        match self {
            UnionPayEnvironment::Production => cn_element == UNIONPAY_CN,
            UnionPayEnvironment::Test => cn_element == UNIONPAY_CN || cn_element == TEST_SIGNER_CN,
        }
    }
}

/// Why the trust anchors could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("the {which} certificate could not be read: {detail}")]
    Unreadable { which: &'static str, detail: String },
    #[error("the middle certificate ({middle}) is not issued by the root certificate ({root}): {detail}")]
    MiddleNotFromRoot {
        middle: String,
        root: String,
        detail: String,
    },
    #[error("the root certificate ({0}) is not self-signed")]
    RootNotSelfSigned(String),
    #[error("the bundle must hold UnionPay's root and middle certificates: {0}")]
    Bundle(String),
}

#[derive(Clone)]
struct CachedSigner {
    key: PublicKey,
    not_before: i64,
    not_after: i64,
}

/// UnionPay's root and middle certificates, and the signing certificates already validated.
/// Cheap to clone (the cache is shared).
#[derive(Clone)]
pub struct TrustStore {
    root: Arc<Certificate>,
    middle: Arc<Certificate>,
    middle_key: PublicKey,
    environment: UnionPayEnvironment,
    cache: Arc<RwLock<HashMap<String, CachedSigner>>>,
}

impl std::fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustStore")
            .field("root", &self.root.tbs_certificate().subject().to_string())
            .field("middle", &self.middle.tbs_certificate().subject().to_string())
            .field("environment", &self.environment)
            .finish()
    }
}

fn read_one(which: &'static str, bytes: &[u8]) -> Result<Certificate, TrustError> {
    let certs = crypto::load_certificates(bytes).map_err(|e| TrustError::Unreadable {
        which,
        detail: e.to_string(),
    })?;
    match certs.len() {
        1 => Ok(certs.into_iter().next().expect("one")),
        n => Err(TrustError::Unreadable {
            which,
            detail: format!("expected one certificate, found {n}"),
        }),
    }
}

impl TrustStore {
    /// From UnionPay's root and middle certificates (`acp_prod_root.cer`, `acp_prod_middle.cer`,
    /// or the test environment's `acp_test_*`), each as DER, PEM or bare base64.
    pub fn new(root: &[u8], middle: &[u8], environment: UnionPayEnvironment) -> Result<Self, TrustError> {
        Self::from_certs(read_one("root", root)?, read_one("middle", middle)?, environment)
    }

    /// From one bundle holding both (any order; PEM blocks, as `cat root.cer middle.cer` gives).
    /// The root is the self-issued one, the middle the one it issued. Without an explicit
    /// environment, a bundle whose root or middle names itself `TEST` is the test environment
    /// (CFCA's test CAs are "CFCA TEST CS CA" / "CFCA TEST OCA1"); anything else is production.
    pub fn from_bundle(bundle: &[u8], environment: Option<UnionPayEnvironment>) -> Result<Self, TrustError> {
        let certs = crypto::load_certificates(bundle).map_err(|e| TrustError::Bundle(e.to_string()))?;
        let is_self_issued = |c: &Certificate| c.tbs_certificate().subject() == c.tbs_certificate().issuer();
        let root = certs
            .iter()
            .find(|c| is_self_issued(c))
            .cloned()
            .ok_or_else(|| TrustError::Bundle("no self-issued root certificate in it".into()))?;
        let middle = certs
            .iter()
            .find(|c| !is_self_issued(c) && c.tbs_certificate().issuer() == root.tbs_certificate().subject())
            .cloned()
            .ok_or_else(|| TrustError::Bundle("no middle certificate issued by its root".into()))?;
        let env = environment.unwrap_or_else(|| {
            let names = format!(
                "{} {}",
                root.tbs_certificate().subject(),
                middle.tbs_certificate().subject()
            );
            if names.contains("TEST") {
                UnionPayEnvironment::Test
            } else {
                UnionPayEnvironment::Production
            }
        });
        Self::from_certs(root, middle, env)
    }

    fn from_certs(
        root: Certificate,
        middle: Certificate,
        environment: UnionPayEnvironment,
    ) -> Result<Self, TrustError> {
        let root_name = root.tbs_certificate().subject().to_string();
        let middle_name = middle.tbs_certificate().subject().to_string();
        let root_key = crypto::public_key_of_certificate(&root).map_err(|e| TrustError::Unreadable {
            which: "root",
            detail: e.to_string(),
        })?;
        if root.tbs_certificate().issuer() != root.tbs_certificate().subject() || issued_by(&root, &root_key).is_err() {
            return Err(TrustError::RootNotSelfSigned(root_name));
        }
        if middle.tbs_certificate().issuer() != root.tbs_certificate().subject() {
            return Err(TrustError::MiddleNotFromRoot {
                middle: middle_name,
                root: root_name,
                detail: format!("its issuer is {}", middle.tbs_certificate().issuer()),
            });
        }
        issued_by(&middle, &root_key).map_err(|detail| TrustError::MiddleNotFromRoot {
            middle: middle_name.clone(),
            root: root_name.clone(),
            detail,
        })?;
        let middle_key = crypto::public_key_of_certificate(&middle).map_err(|e| TrustError::Unreadable {
            which: "middle",
            detail: e.to_string(),
        })?;
        Ok(TrustStore {
            root: Arc::new(root),
            middle: Arc::new(middle),
            middle_key,
            environment,
            cache: Arc::new(RwLock::new(HashMap::new())),
        })
    }

    pub fn environment(&self) -> UnionPayEnvironment {
        self.environment
    }

    /// The key of a `signPubKeyCert`, once the certificate is proven to be UnionPay's signing
    /// certificate at `now` (see the module docs). The PEM is taken exactly as received.
    pub fn signer_key(&self, pem: &str, now: DateTime<Utc>) -> Result<PublicKey, NotifyError> {
        let t = now.timestamp();
        if let Some(c) = self.cache.read().unwrap_or_else(|e| e.into_inner()).get(pem) {
            if t < c.not_before || t > c.not_after {
                return Err(NotifyError::UnknownKey(format!(
                    "the signing certificate (or its chain) is not valid at {now}"
                )));
            }
            return Ok(c.key.clone());
        }
        let validated = self.validate(pem, now)?;
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(pem.to_string(), validated.clone());
        Ok(validated.key)
    }

    fn validate(&self, pem: &str, now: DateTime<Utc>) -> Result<CachedSigner, NotifyError> {
        let blocks = crypto::der_blocks(pem.as_bytes());
        let [(_, der)] = blocks.as_slice() else {
            return Err(NotifyError::Malformed(format!(
                "signPubKeyCert must hold exactly one certificate, found {}",
                blocks.len()
            )));
        };
        let leaf = Certificate::from_der(der)
            .map_err(|e| NotifyError::Malformed(format!("signPubKeyCert is not a certificate: {e}")))?;
        let subject = leaf.tbs_certificate().subject().to_string();
        if leaf.tbs_certificate().issuer() != self.middle.tbs_certificate().subject() {
            return Err(NotifyError::UnknownKey(format!(
                "the signing certificate {subject} is issued by {}, not by UnionPay's middle certificate {}",
                leaf.tbs_certificate().issuer(),
                self.middle.tbs_certificate().subject()
            )));
        }
        issued_by_der(der, &leaf, &self.middle_key).map_err(|detail| {
            NotifyError::UnknownKey(format!(
                "the signing certificate {subject} names UnionPay's middle certificate as issuer but was not \
                 signed by it ({detail})"
            ))
        })?;
        let mut not_before = i64::MIN;
        let mut not_after = i64::MAX;
        for (what, cert) in [("signing", &leaf), ("middle", &*self.middle), ("root", &*self.root)] {
            let v = cert.tbs_certificate().validity();
            let nb = v.not_before.to_unix_duration().as_secs() as i64;
            let na = v.not_after.to_unix_duration().as_secs() as i64;
            if now.timestamp() < nb || now.timestamp() > na {
                return Err(NotifyError::UnknownKey(format!(
                    "the {what} certificate {} is not valid at {now} (valid {} .. {})",
                    cert.tbs_certificate().subject(),
                    v.not_before,
                    v.not_after
                )));
            }
            not_before = not_before.max(nb);
            not_after = not_after.min(na);
        }
        let cn = leaf
            .tbs_certificate()
            .subject()
            .common_name()
            .ok()
            .flatten()
            .map(|d| d.value().to_string())
            .unwrap_or_default();
        let element = cn.split('@').nth(2).unwrap_or("");
        if !self.environment.accepts_signer(element) {
            return Err(NotifyError::UnknownKey(format!(
                "the signing certificate's CN {cn:?} does not name UnionPay (its third @-element is {element:?}; \
                 the {:?} environment accepts {})",
                self.environment,
                match self.environment {
                    UnionPayEnvironment::Production => UNIONPAY_CN.to_string(),
                    UnionPayEnvironment::Test => format!("{UNIONPAY_CN} or {TEST_SIGNER_CN}"),
                }
            )));
        }
        let key = crypto::public_key_of_certificate(&leaf)
            .map_err(|e| NotifyError::UnknownKey(format!("the signing certificate's key is unusable: {e}")))?;
        Ok(CachedSigner {
            key,
            not_before,
            not_after,
        })
    }
}

/// Does `issuer_key` verify `cert`'s signature (SHA1withRSA or SHA256withRSA, as CFCA signs)?
fn issued_by(cert: &Certificate, issuer_key: &PublicKey) -> Result<(), String> {
    let der = der::Encode::to_der(cert).map_err(|e| e.to_string())?;
    issued_by_der(&der, cert, issuer_key)
}

/// [`issued_by`] over the certificate's bytes as received (`der` is what `cert` was decoded from).
fn issued_by_der(der: &[u8], cert: &Certificate, issuer_key: &PublicKey) -> Result<(), String> {
    let tbs = tbs_bytes(der).ok_or("the certificate's DER could not be split")?;
    let sig = cert
        .signature()
        .as_bytes()
        .ok_or("the certificate's signature is not a whole number of bytes")?;
    let alg = cert.signature_algorithm().oid.to_string();
    if alg != cert.tbs_certificate().signature().oid.to_string() {
        return Err("the certificate's two signature algorithm fields disagree".into());
    }
    let ok = match alg.as_str() {
        SHA256_WITH_RSA => issuer_key.verify_sha256(tbs, sig),
        SHA1_WITH_RSA => issuer_key.verify_sha1(tbs, sig),
        other => return Err(format!("unsupported certificate signature algorithm {other}")),
    };
    ok.map_err(|_| "the certificate's signature does not verify with the issuer's key".to_string())
}

/// The exact `tbsCertificate` bytes inside a certificate's DER (the first element of the outer
/// SEQUENCE).
fn tbs_bytes(der: &[u8]) -> Option<&[u8]> {
    fn header(b: &[u8]) -> Option<(usize, usize)> {
        // (header length, content length) of a DER TLV with a one-byte tag.
        let first = *b.get(1)?;
        if first < 0x80 {
            return Some((2, first as usize));
        }
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        Some((2 + n, len))
    }
    if der.first()? != &0x30 {
        return None;
    }
    let (outer_h, _) = header(der)?;
    let inner = der.get(outer_h..)?;
    if inner.first()? != &0x30 {
        return None;
    }
    let (h, len) = header(inner)?;
    inner.get(..h + len)
}

/// Verify a signed UnionPay message (answer or notification fields, decoded once) with the key of
/// its `signPubKeyCert`, as proven by `trust` at `now`.
pub fn verify_fields(trust: &TrustStore, fields: &[(String, String)], now: DateTime<Utc>) -> Result<(), NotifyError> {
    let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let signature = get("signature")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| NotifyError::MissingSignature("no signature field".into()))?;
    match get("signMethod") {
        Some("01") => {}
        Some(other) => {
            return Err(NotifyError::BadSignature(format!(
                "signMethod {other:?} is not supported (only 01, SHA256withRSA with a certificate)"
            )))
        }
        None => return Err(NotifyError::Malformed("no signMethod field".into())),
    }
    match get("version") {
        Some("5.1.0") => {}
        other => {
            return Err(NotifyError::Malformed(format!(
                "version {other:?} is not 5.1.0 (5.0.0 signs with SHA-1 and names its certificate by certId)"
            )))
        }
    }
    let pem = get("signPubKeyCert")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| NotifyError::UnknownKey("no signPubKeyCert field: nothing proves who signed".into()))?;
    let key = trust.signer_key(pem, now)?;
    let digest = crypto::sha256_hex(sign_string(fields, false).as_bytes());
    key.verify_sha256_base64(digest.as_bytes(), signature).map_err(|e| {
        NotifyError::BadSignature(format!("{e} (SHA256withRSA over the hex SHA-256 of the sorted fields)"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &[u8] = include_bytes!("../../../fixtures/sandbox/unionpay/root.pem");
    const MIDDLE: &[u8] = include_bytes!("../../../fixtures/sandbox/unionpay/middle.pem");
    const SIGN: &[u8] = include_bytes!("../../../fixtures/sandbox/unionpay/sign.pem");

    fn der(pem: &[u8]) -> Vec<u8> {
        crypto::der_blocks(pem).remove(0).1
    }

    #[test]
    fn anchors_load_from_der_or_pem_and_from_a_bundle_in_any_order() {
        let now = Utc::now();
        let pem = String::from_utf8(SIGN.to_vec()).unwrap();
        for trust in [
            TrustStore::new(ROOT, MIDDLE, UnionPayEnvironment::Test).unwrap(),
            TrustStore::new(&der(ROOT), &der(MIDDLE), UnionPayEnvironment::Test).unwrap(),
            TrustStore::from_bundle(&[MIDDLE, ROOT].concat(), None).unwrap(),
        ] {
            assert_eq!(
                trust.environment(),
                UnionPayEnvironment::Test,
                "the sandbox CAs say TEST"
            );
            assert!(trust.signer_key(&pem, now).is_ok());
            assert!(trust.signer_key(&pem, now).is_ok(), "and again from the cache");
        }
    }

    #[test]
    fn anchors_that_do_not_chain_are_refused() {
        assert!(matches!(
            TrustStore::new(MIDDLE, ROOT, UnionPayEnvironment::Test),
            Err(TrustError::RootNotSelfSigned(_))
        ));
        assert!(matches!(
            TrustStore::new(ROOT, SIGN, UnionPayEnvironment::Test),
            Err(TrustError::MiddleNotFromRoot { .. })
        ));
        assert!(matches!(
            TrustStore::from_bundle(ROOT, None),
            Err(TrustError::Bundle(_))
        ));
        assert!(matches!(
            TrustStore::new(b"junk", MIDDLE, UnionPayEnvironment::Test),
            Err(TrustError::Unreadable { which: "root", .. })
        ));
    }

    #[test]
    fn the_cache_still_checks_validity_and_production_refuses_the_test_signer() {
        let pem = String::from_utf8(SIGN.to_vec()).unwrap();
        let trust = TrustStore::new(ROOT, MIDDLE, UnionPayEnvironment::Test).unwrap();
        assert!(trust.signer_key(&pem, Utc::now()).is_ok());
        let later = "2050-06-01T00:00:00Z".parse().unwrap();
        assert!(matches!(trust.signer_key(&pem, later), Err(NotifyError::UnknownKey(_))));
        let prod = TrustStore::new(ROOT, MIDDLE, UnionPayEnvironment::Production).unwrap();
        assert!(
            matches!(prod.signer_key(&pem, Utc::now()), Err(NotifyError::UnknownKey(m)) if m.contains("00040000:SIGN"))
        );
        assert!(UnionPayEnvironment::Production.accepts_signer(UNIONPAY_CN));
        assert!(!UnionPayEnvironment::Production.accepts_signer(TEST_SIGNER_CN));
        assert!(matches!(
            trust.signer_key(
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
                Utc::now()
            ),
            Err(NotifyError::Malformed(_))
        ));
    }
}
