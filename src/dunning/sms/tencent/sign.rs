//! Tencent Cloud API 3.0 request signature, TC3-HMAC-SHA256 (notifications.md §4.2).
//!
//! Canonical request: method, `/`, the query (empty for POST), the signed headers written
//! `key:value\n` with **keys and values lower-cased** and sorted, the signed header names, and
//! the SHA-256 of the body exactly as sent. String to sign: `TC3-HMAC-SHA256`, the timestamp,
//! the credential scope `Date/service/tc3_request` (the **UTC** date of the timestamp), and the
//! canonical request's SHA-256. The signing key is derived in three HMAC steps whose
//! intermediate outputs are raw bytes: `TC3`+secret → date → service → `tc3_request`.
//!
//! The body is hashed as bytes: the client signs the exact bytes it sends and the sandbox
//! verifies the exact bytes it received, never a re-serialisation.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// The exact `Content-Type` our clients send and sign. Some HTTP libraries append or rewrite
/// the charset; ours sets the header itself and the sandbox refuses any other value.
pub const CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// A request to sign.
#[derive(Debug, Clone)]
pub struct Tc3Request<'a> {
    pub method: &'a str,
    pub host: &'a str,
    /// `""` for POST.
    pub query: &'a str,
    pub content_type: &'a str,
    pub action: &'a str,
    /// Sign `x-tc-action` too (current documentation) or only `content-type;host` (2019–2022).
    pub sign_action: bool,
    pub timestamp: i64,
    pub service: &'a str,
    pub body: &'a [u8],
}

/// The UTC calendar date of a Unix timestamp, `yyyy-MM-dd`.
pub fn utc_date(timestamp: i64) -> String {
    DateTime::<Utc>::from_timestamp(timestamp, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// `Date/service/tc3_request`.
pub fn credential_scope(timestamp: i64, service: &str) -> String {
    format!("{}/{}/tc3_request", utc_date(timestamp), service)
}

/// The canonical request and the `SignedHeaders` list.
pub fn canonical_request(req: &Tc3Request<'_>) -> (String, String) {
    let mut headers = vec![
        ("content-type", req.content_type.to_ascii_lowercase()),
        ("host", req.host.to_ascii_lowercase()),
    ];
    if req.sign_action {
        headers.push(("x-tc-action", req.action.to_ascii_lowercase()));
    }
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{}\n", v.trim())).collect();
    let signed_headers = headers.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(";");
    let cr = format!(
        "{}\n/\n{}\n{}\n{}\n{}",
        req.method.to_ascii_uppercase(),
        req.query,
        canonical_headers,
        signed_headers,
        hex::encode(Sha256::digest(req.body))
    );
    (cr, signed_headers)
}

/// The string to sign over a canonical request.
pub fn string_to_sign(timestamp: i64, service: &str, canonical_request: &str) -> String {
    format!(
        "TC3-HMAC-SHA256\n{timestamp}\n{}\n{}",
        credential_scope(timestamp, service),
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

/// `SecretDate = HMAC("TC3" + SecretKey, Date)`.
pub fn secret_date(secret_key: &str, date: &str) -> [u8; 32] {
    hmac(format!("TC3{secret_key}").as_bytes(), date.as_bytes())
}

/// The rest of the key derivation from `SecretDate`: `(SecretService, SecretSigning)`.
pub fn signing_key_from_date(secret_date: &[u8], service: &str) -> ([u8; 32], [u8; 32]) {
    let secret_service = hmac(secret_date, service.as_bytes());
    let secret_signing = hmac(&secret_service, b"tc3_request");
    (secret_service, secret_signing)
}

/// Lower-hex HMAC-SHA256 of the string to sign with the signing key.
pub fn signature_with_key(signing_key: &[u8], string_to_sign: &str) -> String {
    hex::encode(hmac(signing_key, string_to_sign.as_bytes()))
}

/// Everything signing produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tc3Signed {
    pub canonical_request: String,
    pub string_to_sign: String,
    pub signed_headers: String,
    pub signature: String,
    pub authorization: String,
}

/// Sign `req` with the secret id and key.
pub fn sign(secret_id: &str, secret_key: &str, req: &Tc3Request<'_>) -> Tc3Signed {
    let (canonical_request, signed_headers) = canonical_request(req);
    let sts = string_to_sign(req.timestamp, req.service, &canonical_request);
    let date = secret_date(secret_key, &utc_date(req.timestamp));
    let (_, key) = signing_key_from_date(&date, req.service);
    let signature = signature_with_key(&key, &sts);
    let authorization = format!(
        "TC3-HMAC-SHA256 Credential={secret_id}/{}, SignedHeaders={signed_headers}, Signature={signature}",
        credential_scope(req.timestamp, req.service)
    );
    Tc3Signed {
        canonical_request,
        string_to_sign: sts,
        signed_headers,
        signature,
        authorization,
    }
}

/// The parts of a `TC3-HMAC-SHA256` `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tc3Authorization {
    pub secret_id: String,
    pub date: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Parse `TC3-HMAC-SHA256 Credential=ID/DATE/SERVICE/tc3_request, SignedHeaders=…, Signature=…`.
pub fn parse_authorization(value: &str) -> Option<Tc3Authorization> {
    let rest = value.strip_prefix("TC3-HMAC-SHA256 ")?;
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(", ") {
        let (k, v) = part.split_once('=')?;
        match k {
            "Credential" => cred = Some(v),
            "SignedHeaders" => signed = Some(v.split(';').map(str::to_string).collect()),
            "Signature" => sig = Some(v.to_string()),
            _ => return None,
        }
    }
    let mut c = cred?.rsplitn(4, '/');
    let (term, service, date, id) = (c.next()?, c.next()?, c.next()?, c.next()?);
    if term != "tc3_request" {
        return None;
    }
    Some(Tc3Authorization {
        secret_id: id.to_string(),
        date: date.to_string(),
        service: service.to_string(),
        signed_headers: signed?,
        signature: sig?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    const VECTORS: &str = include_str!("../../../../fixtures/dunning/tencent_vectors.toml");

    #[derive(Deserialize)]
    struct Vectors {
        current_cvm: Vector,
        legacy_cvm: Vector,
        oldest_cvm: Vector,
        send_sms: Vector,
    }

    #[derive(Deserialize, Clone)]
    struct Vector {
        method: String,
        host: String,
        content_type: String,
        action: String,
        timestamp: i64,
        service: String,
        signed_headers: String,
        secret_id: Option<String>,
        secret_key: Option<String>,
        body: String,
        hashed_payload: Option<String>,
        canonical_request: Option<String>,
        hashed_canonical_request: Option<String>,
        string_to_sign: Option<String>,
        secret_date: Option<String>,
        secret_service: Option<String>,
        secret_signing: Option<String>,
        published_prefix: Option<String>,
        signature: String,
        authorization: Option<String>,
    }

    fn vectors() -> Vectors {
        toml::from_str(VECTORS).expect("fixtures/dunning/tencent_vectors.toml parses")
    }

    fn request(v: &Vector) -> Tc3Request<'_> {
        Tc3Request {
            method: &v.method,
            host: &v.host,
            query: "",
            content_type: &v.content_type,
            action: &v.action,
            sign_action: v.signed_headers.contains("x-tc-action"),
            timestamp: v.timestamp,
            service: &v.service,
            body: v.body.as_bytes(),
        }
    }

    fn sha_hex(s: &str) -> String {
        hex::encode(Sha256::digest(s.as_bytes()))
    }

    #[test]
    fn the_current_documentation_example_is_reproduced_from_secret_date_onwards() {
        let v = vectors().current_cvm;
        assert_eq!(sha_hex(&v.body), v.hashed_payload.clone().unwrap());
        let (cr, signed) = canonical_request(&request(&v));
        assert_eq!(cr, v.canonical_request.clone().unwrap());
        assert_eq!(signed, v.signed_headers);
        assert_eq!(sha_hex(&cr), v.hashed_canonical_request.clone().unwrap());
        let sts = string_to_sign(v.timestamp, &v.service, &cr);
        assert_eq!(sts, v.string_to_sign.clone().unwrap());
        let date = hex::decode(v.secret_date.unwrap()).unwrap();
        let (service, signing) = signing_key_from_date(&date, &v.service);
        assert_eq!(hex::encode(service), v.secret_service.unwrap());
        assert_eq!(hex::encode(signing), v.secret_signing.unwrap());
        assert_eq!(signature_with_key(&signing, &sts), v.signature);
    }

    #[test]
    fn the_2019_documentation_example_is_reproduced_with_its_literal_masked_key() {
        let v = vectors().legacy_cvm;
        let signed = sign(
            v.secret_id.as_deref().unwrap(),
            v.secret_key.as_deref().unwrap(),
            &request(&v),
        );
        assert_eq!(signed.canonical_request, v.canonical_request.clone().unwrap());
        assert_eq!(sha_hex(&signed.canonical_request), v.hashed_canonical_request.unwrap());
        assert_eq!(signed.string_to_sign, v.string_to_sign.unwrap());
        assert_eq!(signed.signature, v.signature);
        assert_eq!(signed.authorization, v.authorization.unwrap());
    }

    #[test]
    fn the_oldest_example_keys_give_the_published_prefix() {
        let v = vectors().oldest_cvm;
        let signed = sign(
            v.secret_id.as_deref().unwrap(),
            v.secret_key.as_deref().unwrap(),
            &request(&v),
        );
        assert!(signed.signature.starts_with(&v.published_prefix.unwrap()));
        assert_eq!(signed.signature, v.signature);
    }

    #[test]
    fn the_send_sms_vector_is_reproduced_at_every_stage() {
        let v = vectors().send_sms;
        let key = v.secret_key.as_deref().unwrap();
        assert_eq!(sha_hex(&v.body), v.hashed_payload.clone().unwrap());
        let date = secret_date(key, &utc_date(v.timestamp));
        assert_eq!(hex::encode(date), v.secret_date.clone().unwrap());
        let (service, signing) = signing_key_from_date(&date, &v.service);
        assert_eq!(hex::encode(service), v.secret_service.clone().unwrap());
        assert_eq!(hex::encode(signing), v.secret_signing.clone().unwrap());
        let signed = sign(v.secret_id.as_deref().unwrap(), key, &request(&v));
        assert_eq!(signed.canonical_request, v.canonical_request.clone().unwrap());
        assert_eq!(signed.string_to_sign, v.string_to_sign.clone().unwrap());
        assert_eq!(signed.signature, v.signature);
        assert_eq!(signed.authorization, v.authorization.clone().unwrap());
        let parsed = parse_authorization(&signed.authorization).unwrap();
        assert_eq!(parsed.secret_id, "AKIDtestid");
        assert_eq!(parsed.date, "2024-01-01");
        assert_eq!(parsed.service, "sms");
        assert_eq!(parsed.signed_headers, vec!["content-type", "host", "x-tc-action"]);
    }

    #[test]
    fn a_scope_date_taken_from_beijing_time_is_wrong() {
        let v = vectors().legacy_cvm;
        assert_eq!(
            utc_date(v.timestamp),
            "2019-02-25",
            "UTC, although it is already the 26th in Beijing"
        );
        let key = v.secret_key.as_deref().unwrap();
        let (cr, _) = canonical_request(&request(&v));
        let wrong_sts = string_to_sign(v.timestamp, &v.service, &cr).replace("2019-02-25", "2019-02-26");
        let (_, k) = signing_key_from_date(&secret_date(key, "2019-02-26"), &v.service);
        assert_ne!(signature_with_key(&k, &wrong_sts), v.signature);
    }

    #[test]
    fn a_re_serialised_body_is_wrong() {
        let v = vectors().legacy_cvm;
        let key = v.secret_key.as_deref().unwrap();
        let id = v.secret_id.as_deref().unwrap();
        for body in [
            // decoded instead of the \u escapes that were sent
            r#"{"Limit": 1, "Filters": [{"Values": ["未命名"], "Name": "instance-name"}]}"#,
            // different spacing
            r#"{"Limit":1,"Filters":[{"Values":["\u672a\u547d\u540d"],"Name":"instance-name"}]}"#,
        ] {
            let mut r = request(&v);
            r.body = body.as_bytes();
            assert_ne!(sign(id, key, &r).signature, v.signature, "{body}");
        }
    }

    #[test]
    fn an_action_value_not_lower_cased_is_wrong() {
        let v = vectors().send_sms;
        let key = v.secret_key.as_deref().unwrap();
        let cr = v
            .canonical_request
            .clone()
            .unwrap()
            .replace("x-tc-action:sendsms", "x-tc-action:SendSms");
        let sts = string_to_sign(v.timestamp, &v.service, &cr);
        let (_, k) = signing_key_from_date(&secret_date(key, &utc_date(v.timestamp)), &v.service);
        assert_ne!(signature_with_key(&k, &sts), v.signature);
    }

    #[test]
    fn a_content_type_other_than_the_signed_one_is_wrong() {
        let v = vectors().send_sms;
        let key = v.secret_key.as_deref().unwrap();
        let id = v.secret_id.as_deref().unwrap();
        // What a library may send instead of the signed value (a missing or rewritten charset).
        for ct in [
            "application/json",
            "application/json;charset=utf-8",
            "application/json; charset=gbk",
        ] {
            let mut r = request(&v);
            r.content_type = ct;
            assert_ne!(sign(id, key, &r).signature, v.signature, "{ct:?}");
        }
    }
}
