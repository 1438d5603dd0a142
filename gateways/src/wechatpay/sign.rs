//! Request signing (`Authorization: WECHATPAY2-SHA256-RSA2048 …`), the JSAPI client-side
//! `paySign`, and the messages WeChat Pay signs on its side (responses and notifications).
//!
//! Every message is a sequence of lines, each ending in `\n` including the last; RSASSA-PKCS1-v1_5
//! with SHA-256, base64 (gateways.md §2.2, §2.3). The canonical URL is the request target exactly
//! as sent: path (including any base path, e.g. the sandbox's `/wechatpay` prefix) plus `?` and
//! the query when there is one, no scheme or host.

use rand::Rng;

use crate::crypto::PrivateKey;

/// The only signature scheme WeChat Pay API v3 uses.
pub const SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

/// The string a merchant signs for a request.
pub fn request_message(method: &str, canonical_url: &str, timestamp: i64, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(body.len() + canonical_url.len() + 64);
    m.extend_from_slice(method.to_ascii_uppercase().as_bytes());
    m.push(b'\n');
    m.extend_from_slice(canonical_url.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(timestamp.to_string().as_bytes());
    m.push(b'\n');
    m.extend_from_slice(nonce.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// The string WeChat Pay signs for a response or a notification: timestamp, nonce and the raw
/// body bytes (an empty body leaves the third line empty).
pub fn response_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(body.len() + nonce.len() + 16);
    m.extend_from_slice(timestamp.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(nonce.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// A random nonce: 32 characters of `[A-Z0-9]`, as the official SDKs make them.
pub fn new_nonce() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// The parts of an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub mchid: String,
    pub nonce_str: String,
    pub timestamp: i64,
    pub serial_no: String,
    pub signature: String,
}

impl Authorization {
    /// Sign a request.
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        key: &PrivateKey,
        mchid: &str,
        serial_no: &str,
        method: &str,
        canonical_url: &str,
        timestamp: i64,
        nonce: &str,
        body: &[u8],
    ) -> Authorization {
        let message = request_message(method, canonical_url, timestamp, nonce, body);
        Authorization {
            mchid: mchid.to_string(),
            nonce_str: nonce.to_string(),
            timestamp,
            serial_no: serial_no.to_string(),
            signature: key.sign_sha256_base64(&message),
        }
    }

    /// The header value, parameters in wechatpay-java's order (the order is free).
    pub fn header_value(&self) -> String {
        format!(
            "{SCHEME} mchid=\"{}\",nonce_str=\"{}\",signature=\"{}\",timestamp=\"{}\",serial_no=\"{}\"",
            self.mchid, self.nonce_str, self.signature, self.timestamp, self.serial_no
        )
    }

    /// Parse a header value (the sandbox's side). Parameters in any order; all five required.
    pub fn parse(value: &str) -> Result<Authorization, String> {
        let rest = value
            .trim()
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("the Authorization scheme is not {SCHEME}"))?;
        if !rest.starts_with(' ') {
            return Err(format!("the Authorization scheme is not {SCHEME}"));
        }
        let (mut mchid, mut nonce, mut ts, mut serial, mut sig) = (None, None, None, None, None);
        for part in split_params(rest.trim()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("Authorization parameter {part:?} has no value"))?;
            let v = v
                .trim()
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or_else(|| format!("Authorization parameter {k} is not quoted"))?
                .to_string();
            match k.trim() {
                "mchid" => mchid = Some(v),
                "nonce_str" => nonce = Some(v),
                "timestamp" => ts = Some(v),
                "serial_no" => serial = Some(v),
                "signature" => sig = Some(v),
                other => return Err(format!("unknown Authorization parameter {other:?}")),
            }
        }
        let need = |v: Option<String>, name: &str| v.ok_or_else(|| format!("Authorization lacks {name}"));
        let ts = need(ts, "timestamp")?;
        Ok(Authorization {
            mchid: need(mchid, "mchid")?,
            nonce_str: need(nonce, "nonce_str")?,
            timestamp: ts
                .parse()
                .map_err(|_| format!("Authorization timestamp {ts:?} is not epoch seconds"))?,
            serial_no: need(serial, "serial_no")?,
            signature: need(sig, "signature")?,
        })
    }
}

/// Split `a="x",b="y"` on the commas outside quotes (base64 signatures hold no commas, but be exact).
fn split_params(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        out.push(s[start..].trim());
    }
    out.into_iter().filter(|p| !p.is_empty()).collect()
}

/// The message of a JSAPI `paySign`: `appId\ntimeStamp\nnonceStr\npackage\n`.
pub fn jsapi_message(appid: &str, timestamp: &str, nonce: &str, package: &str) -> Vec<u8> {
    format!("{appid}\n{timestamp}\n{nonce}\n{package}\n").into_bytes()
}

/// The parameters for `WeixinJSBridge.invoke('getBrandWCPayRequest', …)` (or
/// `wx.requestPayment`), in the order the page passes them: appId, timeStamp, nonceStr, package,
/// signType, paySign. `signType` is `RSA` for API v3.
pub fn jsapi_params(
    key: &PrivateKey,
    appid: &str,
    prepay_id: &str,
    timestamp: i64,
    nonce: &str,
) -> Vec<(String, String)> {
    let ts = timestamp.to_string();
    let package = format!("prepay_id={prepay_id}");
    let pay_sign = key.sign_sha256_base64(&jsapi_message(appid, &ts, nonce, &package));
    vec![
        ("appId".into(), appid.to_string()),
        ("timeStamp".into(), ts),
        ("nonceStr".into(), nonce.to_string()),
        ("package".into(), package),
        ("signType".into(), "RSA".into()),
        ("paySign".into(), pay_sign),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published vector W6 (wechatpay-go `wechat_pay_credential_test.go`): the message layout.
    #[test]
    fn vector_w6_request_messages_end_every_line_with_a_newline() {
        assert_eq!(
            request_message("GET", "/v3/certificates", 1624523846, "A1B2C3D4E5F6G7", b""),
            b"GET\n/v3/certificates\n1624523846\nA1B2C3D4E5F6G7\n\n"
        );
        assert_eq!(
            request_message(
                "post",
                "/v3/certificates",
                1624523846,
                "A1B2C3D4E5F6G7",
                b"Hello World!\n"
            ),
            b"POST\n/v3/certificates\n1624523846\nA1B2C3D4E5F6G7\nHello World!\n\n"
        );
        assert_eq!(response_message("1", "n", b""), b"1\nn\n\n");
    }

    #[test]
    fn authorization_headers_parse_back_in_any_parameter_order() {
        let a = Authorization {
            mchid: "1234567890".into(),
            nonce_str: "A1B2C3D4E5F6G7".into(),
            timestamp: 1624523846,
            serial_no: "0123456789ABC".into(),
            signature: "c2ln+/==".into(),
        };
        assert_eq!(Authorization::parse(&a.header_value()).unwrap(), a);
        let go_order = "WECHATPAY2-SHA256-RSA2048 mchid=\"1234567890\",nonce_str=\"A1B2C3D4E5F6G7\",timestamp=\"1624523846\",serial_no=\"0123456789ABC\",signature=\"c2ln+/==\"";
        assert_eq!(Authorization::parse(go_order).unwrap(), a);
        assert!(Authorization::parse("WECHATPAY2-Mock mchid=\"1\"").is_err());
        assert!(Authorization::parse("WECHATPAY2-SHA256-RSA2048 mchid=\"1\"")
            .unwrap_err()
            .contains("lacks"));
        assert!(Authorization::parse(&go_order.replace("timestamp=\"1624523846\"", "timestamp=\"soon\"")).is_err());
    }

    #[test]
    fn nonces_are_32_upper_case_alphanumerics_and_differ() {
        let (a, b) = (new_nonce(), new_nonce());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
        assert_ne!(a, b);
    }
}
