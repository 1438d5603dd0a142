//! Alibaba Cloud request signatures (notifications.md §3.2–§3.3).
//!
//! - **V2** ("RPC", HMAC-SHA1): every parameter but `Signature`, RFC 3986-encoded, sorted by
//!   name, joined; the string to sign is `METHOD&%2F&` + that canonical string encoded a second
//!   time; the key is `AccessKeySecret + "&"`; the signature is Base64.
//! - **V3** (`ACS3-HMAC-SHA256`): a canonical request of method, URI, sorted query, the sorted
//!   lower-case signed headers (`host`, `content-type` when sent, every `x-acs-*`), the signed
//!   header names and the body's SHA-256; the string to sign is `ACS3-HMAC-SHA256\n` + the
//!   canonical request's SHA-256; the key is the raw secret (no `&`); the signature is lower hex.
//!
//! The same functions serve the client (signing what it sends) and the sandbox provider
//! (recomputing from what it received), so a difference between the two can only come from the
//! bytes on the wire — which is what the sandbox is there to catch.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// RFC 3986 unreserved characters are kept; everything else is `%XY` with upper-case hex.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encode one name or value as Alibaba Cloud signs it (space → `%20`, `*` → `%2A`,
/// `~` kept).
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

/// The SHA-256 of an empty body, in lower hex.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Sorted (by name, ascending bytes), encoded `name=value` pairs joined with `&`.
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// V2 string to sign: `METHOD&%2F&` + the canonical query encoded a second time.
pub fn v2_string_to_sign(method: &str, params: &[(String, String)]) -> String {
    let cq = canonical_query(params);
    format!("{}&{}&{}", method, percent_encode("/"), percent_encode(&cq))
}

/// V2 signature: Base64(HMAC-SHA1(secret + "&", string to sign)).
pub fn v2_signature(secret: &str, method: &str, params: &[(String, String)]) -> String {
    let sts = v2_string_to_sign(method, params);
    let mut mac = Hmac::<Sha1>::new_from_slice(format!("{secret}&").as_bytes()).expect("HMAC takes any key length");
    mac.update(sts.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A request to sign with V3. `headers` are the extra headers to sign besides the `x-acs-*`
/// set (at least `host`; `content-type` when a body is sent); names in any case.
#[derive(Debug, Clone)]
pub struct V3Request<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    pub query: &'a [(String, String)],
    pub host: &'a str,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
    pub action: &'a str,
    pub version: &'a str,
    /// `x-acs-date`, UTC `yyyy-MM-ddTHH:mm:ssZ`.
    pub date: &'a str,
    pub nonce: &'a str,
    pub security_token: Option<&'a str>,
}

/// Everything V3 signing produces; the intermediate values are kept for tests and for the
/// sandbox's explanation of a refused signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Signed {
    pub canonical_request: String,
    pub hashed_canonical_request: String,
    pub string_to_sign: String,
    pub signature: String,
    pub signed_headers: String,
    pub authorization: String,
    /// The headers to send (lower-case names), `authorization` included.
    pub headers: Vec<(String, String)>,
}

/// The lower-case, sorted header lines to sign and the `SignedHeaders` list.
pub fn v3_canonical_headers(headers: &[(String, String)]) -> (String, String) {
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    hs.sort();
    let canonical: String = hs.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let names = hs.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
    (canonical, names)
}

/// The headers V3 signs for `req`, lower-case names, before sorting.
pub fn v3_headers_to_sign(req: &V3Request<'_>) -> Vec<(String, String)> {
    let mut h = vec![
        ("host".to_string(), req.host.to_string()),
        ("x-acs-action".to_string(), req.action.to_string()),
        (
            "x-acs-content-sha256".to_string(),
            hex::encode(Sha256::digest(req.body)),
        ),
        ("x-acs-date".to_string(), req.date.to_string()),
        ("x-acs-signature-nonce".to_string(), req.nonce.to_string()),
        ("x-acs-version".to_string(), req.version.to_string()),
    ];
    if let Some(ct) = req.content_type {
        h.push(("content-type".to_string(), ct.to_string()));
    }
    if let Some(token) = req.security_token {
        h.push(("x-acs-security-token".to_string(), token.to_string()));
    }
    h
}

/// Build the canonical request from already chosen headers (the sandbox passes what it
/// received; the client what it will send).
pub fn v3_canonical_request(
    method: &str,
    uri: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    body: &[u8],
) -> (String, String) {
    let (canonical_headers, signed_headers) = v3_canonical_headers(headers);
    let cr = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        method.to_ascii_uppercase(),
        uri,
        canonical_query(query),
        canonical_headers,
        signed_headers,
        hex::encode(Sha256::digest(body))
    );
    (cr, signed_headers)
}

/// V3 signature over a canonical request: lower hex HMAC-SHA256(raw secret, string to sign).
pub fn v3_signature_of(secret: &str, canonical_request: &str) -> (String, String, String) {
    let hashed = hex::encode(Sha256::digest(canonical_request.as_bytes()));
    let sts = format!("ACS3-HMAC-SHA256\n{hashed}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(sts.as_bytes());
    (hashed, sts, hex::encode(mac.finalize().into_bytes()))
}

/// Sign `req` with V3.
pub fn v3_sign(access_key_id: &str, secret: &str, req: &V3Request<'_>) -> V3Signed {
    let headers = v3_headers_to_sign(req);
    let (canonical_request, signed_headers) = v3_canonical_request(req.method, req.uri, req.query, &headers, req.body);
    let (hashed_canonical_request, string_to_sign, signature) = v3_signature_of(secret, &canonical_request);
    let authorization =
        format!("ACS3-HMAC-SHA256 Credential={access_key_id},SignedHeaders={signed_headers},Signature={signature}");
    let mut out_headers = headers;
    out_headers.push(("authorization".to_string(), authorization.clone()));
    V3Signed {
        canonical_request,
        hashed_canonical_request,
        string_to_sign,
        signature,
        signed_headers,
        authorization,
        headers: out_headers,
    }
}

/// The three parts of an `ACS3-HMAC-SHA256` `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Authorization {
    pub access_key_id: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Parse `ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…`.
pub fn parse_v3_authorization(value: &str) -> Option<V3Authorization> {
    let rest = value.strip_prefix("ACS3-HMAC-SHA256 ")?;
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => cred = Some(v.to_string()),
            "SignedHeaders" => signed = Some(v.split(';').map(str::to_string).collect()),
            "Signature" => sig = Some(v.to_string()),
            _ => return None,
        }
    }
    Some(V3Authorization {
        access_key_id: cred?,
        signed_headers: signed?,
        signature: sig?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    const VECTORS: &str = include_str!("../../../../fixtures/dunning/aliyun_vectors.toml");

    #[derive(Deserialize)]
    struct Vectors {
        v2_sms_example: V2Vector,
        v2_rpc_example: V2Vector,
        v3_run_instances: V3Vector,
        v3_send_sms: V3Vector,
    }

    #[derive(Deserialize)]
    struct V2Vector {
        method: String,
        secret: String,
        params: Vec<(String, String)>,
        canonical_query: Option<String>,
        string_to_sign: String,
        signature: String,
        signature_encoded: Option<String>,
        signature_post: Option<String>,
        url: Option<String>,
    }

    #[derive(Deserialize)]
    struct V3Vector {
        method: String,
        host: String,
        uri: String,
        query: Vec<(String, String)>,
        body: String,
        action: String,
        version: String,
        date: String,
        nonce: String,
        access_key_id: String,
        secret: String,
        canonical_query: Option<String>,
        canonical_headers: Option<String>,
        canonical_request: Option<String>,
        hashed_canonical_request: String,
        string_to_sign: Option<String>,
        signature: String,
        authorization: String,
    }

    fn vectors() -> Vectors {
        toml::from_str(VECTORS).expect("fixtures/dunning/aliyun_vectors.toml parses")
    }

    fn v3_request(v: &V3Vector) -> V3Request<'_> {
        V3Request {
            method: &v.method,
            uri: &v.uri,
            query: &v.query,
            host: &v.host,
            content_type: None,
            body: v.body.as_bytes(),
            action: &v.action,
            version: &v.version,
            date: &v.date,
            nonce: &v.nonce,
            security_token: None,
        }
    }

    #[test]
    fn v2_reproduces_the_published_sms_example_step_by_step() {
        let v = vectors().v2_sms_example;
        assert_eq!(canonical_query(&v.params), v.canonical_query.unwrap());
        assert_eq!(v2_string_to_sign(&v.method, &v.params), v.string_to_sign);
        let sig = v2_signature(&v.secret, &v.method, &v.params);
        assert_eq!(sig, v.signature);
        assert_eq!(percent_encode(&sig), v.signature_encoded.unwrap());
        let url = format!(
            "http://dysmsapi.aliyuncs.com/?Signature={}&{}",
            percent_encode(&sig),
            canonical_query(&v.params)
        );
        assert_eq!(url, v.url.unwrap());
    }

    #[test]
    fn v2_reproduces_the_published_generic_rpc_example_and_the_method_is_signed() {
        let v = vectors().v2_rpc_example;
        assert_eq!(v2_string_to_sign(&v.method, &v.params), v.string_to_sign);
        assert_eq!(v2_signature(&v.secret, &v.method, &v.params), v.signature);
        assert_eq!(v2_signature(&v.secret, "POST", &v.params), v.signature_post.unwrap());
    }

    fn hmac_sha1_b64(key: &str, msg: &str) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(msg.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    #[test]
    fn v2_wrong_encodings_change_the_signature() {
        let v = vectors().v2_sms_example;
        let good = v2_signature(&v.secret, &v.method, &v.params);
        // A value with a space, a star and a tilde: each must be encoded the RFC 3986 way.
        let mut params = v.params.clone();
        params.push(("OutId".into(), "a b*c~d".into()));
        params.retain(|(k, val)| k != "OutId" || val != "123");
        let right = v2_signature(&v.secret, &v.method, &params);
        let right_sts = v2_string_to_sign(&v.method, &params);
        assert!(
            right_sts.contains("a%2520b%252Ac~d"),
            "space %20, star %2A, tilde kept: {right_sts}"
        );
        for wrong in [
            right_sts.replace("a%2520b", "a%252Bb"), // space as '+'
            right_sts.replace("%252Ac", "*c"),       // star left unencoded
            right_sts.replace("c~d", "c%257Ed"),     // tilde encoded
        ] {
            assert_ne!(wrong, right_sts);
            assert_ne!(hmac_sha1_b64(&format!("{}&", v.secret), &wrong), right);
        }
        // Key without the trailing '&'.
        assert_ne!(hmac_sha1_b64(&v.secret, &v.string_to_sign), good);
        // Canonical string encoded only once.
        let once = format!("{}&%2F&{}", v.method, canonical_query(&v.params));
        assert_ne!(hmac_sha1_b64(&format!("{}&", v.secret), &once), good);
        assert_eq!(hmac_sha1_b64(&format!("{}&", v.secret), &v.string_to_sign), good);
    }

    #[test]
    fn v3_reproduces_the_published_run_instances_example() {
        let v = vectors().v3_run_instances;
        let signed = v3_sign(&v.access_key_id, &v.secret, &v3_request(&v));
        assert_eq!(signed.canonical_request, v.canonical_request.unwrap());
        assert_eq!(signed.hashed_canonical_request, v.hashed_canonical_request);
        assert_eq!(signed.string_to_sign, v.string_to_sign.unwrap());
        assert_eq!(signed.signature, v.signature);
        assert_eq!(signed.authorization, v.authorization);
    }

    #[test]
    fn v3_reproduces_the_send_sms_vector() {
        let v = vectors().v3_send_sms;
        assert_eq!(canonical_query(&v.query), v.canonical_query.clone().unwrap());
        let req = v3_request(&v);
        let (headers, _) = v3_canonical_headers(&v3_headers_to_sign(&req));
        assert_eq!(headers, v.canonical_headers.clone().unwrap());
        let signed = v3_sign(&v.access_key_id, &v.secret, &req);
        assert_eq!(signed.hashed_canonical_request, v.hashed_canonical_request);
        assert_eq!(signed.signature, v.signature);
        assert_eq!(signed.authorization, v.authorization);
        let parsed = parse_v3_authorization(&signed.authorization).unwrap();
        assert_eq!(parsed.access_key_id, "testid");
        assert_eq!(parsed.signature, v.signature);
        assert_eq!(parsed.signed_headers.len(), 6);
    }

    #[test]
    fn v3_with_a_trailing_ampersand_on_the_key_is_wrong() {
        let v = vectors().v3_run_instances;
        let cr = v.canonical_request.clone().unwrap();
        let (_, _, with_amp) = v3_signature_of(&format!("{}&", v.secret), &cr);
        assert_ne!(with_amp, v.signature);
        let (_, _, raw) = v3_signature_of(&v.secret, &cr);
        assert_eq!(raw, v.signature);
    }

    #[test]
    fn v3_unsorted_or_upper_case_headers_are_wrong() {
        let v = vectors().v3_run_instances;
        let cr = v.canonical_request.clone().unwrap();
        // Upper-case header names.
        let upper = cr.replace("host:", "Host:").replace("x-acs-action:", "X-Acs-Action:");
        assert_ne!(v3_signature_of(&v.secret, &upper).2, v.signature);
        // Headers out of order (date before content-sha256).
        let lines: Vec<&str> = cr.split('\n').collect();
        let mut swapped = lines.clone();
        swapped.swap(4, 5);
        assert_ne!(v3_signature_of(&v.secret, &swapped.join("\n")).2, v.signature);
        // Our canonicaliser sorts and lower-cases whatever order and case it is given.
        let req = v3_request(&v);
        let mut hs = v3_headers_to_sign(&req);
        hs.reverse();
        for h in hs.iter_mut() {
            h.0 = h.0.to_ascii_uppercase();
        }
        let (canon, _) = v3_canonical_request(&v.method, &v.uri, &v.query, &hs, v.body.as_bytes());
        assert_eq!(canon, cr);
    }
}
