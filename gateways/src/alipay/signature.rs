//! Alipay's three signed messages, each in small steps (gateways.md §1.3, §1.6, §1.10):
//!
//! 1. **Requests** we send: every parameter but `sign` (so `sign_type` *is* included), empty
//!    values dropped, sorted by key in byte order, `key=value` joined with `&`, values raw (not
//!    URL-encoded), UTF-8 → SHA256withRSA with our app key → base64.
//! 2. **Synchronous answers**: the signed content is the exact raw text of the `…_response`
//!    value, from its `{` to its matching `}`, as the bytes arrived. The JSON is never
//!    re-serialised. Only after the raw bytes fail is the `\/` → `/` variant tried (the official
//!    Java SDK's second attempt).
//! 3. **Asynchronous notifications**: the form body is decoded once (percent-decoding, `+` is a
//!    space) into raw bytes in the charset the notification declares (UTF-8 or GBK); `sign` and
//!    `sign_type` are removed, the rest sorted, joined with raw values, and verified over those
//!    bytes (so a GBK notification is verified over its GBK bytes). Trade notifications verify
//!    this way ("V1"); some open-platform notifications keep `sign_type` in the content ("V2"),
//!    which is tried second.

use std::collections::BTreeMap;

use crate::crypto::{PrivateKey, PublicKey, SignatureError};
use crate::gateway::NotifyError;

/// The only signature type meterpay speaks (SHA256withRSA). `RSA` (SHA-1) is refused.
pub const SIGN_TYPE: &str = "RSA2";

// --- 1. requests -----------------------------------------------------------------------------

/// The string to sign for a request: every parameter but `sign`, empty values dropped, sorted by
/// key (byte order), `key=value` joined with `&`, values raw.
pub fn request_sign_content<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let sorted: BTreeMap<&str, &str> = params
        .into_iter()
        .filter(|(k, v)| *k != "sign" && !v.is_empty())
        .collect();
    let mut out = String::new();
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

/// Sign a request's parameters with our app key: base64 of SHA256withRSA over
/// [`request_sign_content`] in UTF-8.
pub fn sign_request(params: &[(String, String)], key: &PrivateKey) -> String {
    let content = request_sign_content(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    key.sign_sha256_base64(content.as_bytes())
}

/// Verify a request's signature (the sandbox's side of [`sign_request`]).
pub fn verify_request(params: &[(String, String)], key: &PublicKey) -> Result<(), SignatureError> {
    let sign = params
        .iter()
        .find(|(k, _)| k == "sign")
        .map(|(_, v)| v.as_str())
        .ok_or(SignatureError::BadEncoding)?;
    let content = request_sign_content(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    key.verify_sha256_base64(content.as_bytes(), sign)
}

// --- 2. synchronous answers ------------------------------------------------------------------

/// A synchronous answer cut into its parts, over the raw bytes received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse<'a> {
    /// `alipay_trade_query_response`, or `error_response` for gateway-level errors.
    pub node_key: String,
    /// The exact bytes of the node's value, `{` … `}`: what Alipay signed.
    pub node: &'a [u8],
    pub sign: Option<String>,
    /// Certificate mode: the serial number of the Alipay certificate that signed the answer.
    pub alipay_cert_sn: Option<String>,
}

/// The name of a method's answer node: dots become underscores, `_response` is appended.
pub fn response_node_key(method: &str) -> String {
    format!("{}_response", method.replace('.', "_"))
}

/// Cut an answer to `method` into its parts. The top-level object is scanned member by member
/// (strings and nesting respected), so the node's bytes are exactly those sent. Exactly one
/// answer node must be present (a second copy of it is refused, not silently chosen between).
pub fn split_response<'a>(body: &'a [u8], method: &str) -> Result<RawResponse<'a>, String> {
    let members = top_level_members(body)?;
    let want = response_node_key(method);
    let mut node: Option<(String, &[u8])> = None;
    let mut sign = None;
    let mut cert_sn = None;
    for (key, range) in members {
        let value = &body[range];
        if key == want || key == "error_response" {
            if node.is_some() {
                return Err(format!("the answer holds more than one {key:?} node"));
            }
            if value.first() != Some(&b'{') {
                return Err(format!("the {key:?} node is not an object"));
            }
            node = Some((key, value));
        } else if key == "sign" {
            sign = Some(json_string(value).ok_or("the sign member is not a string")?);
        } else if key == "alipay_cert_sn" {
            cert_sn = Some(json_string(value).ok_or("the alipay_cert_sn member is not a string")?);
        }
    }
    let (node_key, node) = node.ok_or_else(|| format!("the answer holds no {want:?} node"))?;
    Ok(RawResponse {
        node_key,
        node,
        sign,
        alipay_cert_sn: cert_sn,
    })
}

/// Verify an answer's signature over the node's raw bytes; only if that fails, over the bytes
/// with every `\/` replaced by `/` (the official Java SDK's second attempt).
pub fn verify_response(resp: &RawResponse<'_>, key: &PublicKey) -> Result<(), SignatureError> {
    let sign = resp.sign.as_deref().ok_or(SignatureError::BadEncoding)?;
    match key.verify_sha256_base64(resp.node, sign) {
        Ok(()) => Ok(()),
        Err(SignatureError::BadEncoding) => Err(SignatureError::BadEncoding),
        Err(SignatureError::Mismatch) => {
            if !resp.node.windows(2).any(|w| w == b"\\/") {
                return Err(SignatureError::Mismatch);
            }
            let unescaped = replace_escaped_slashes(resp.node);
            key.verify_sha256_base64(&unescaped, sign)
        }
    }
}

fn replace_escaped_slashes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'/') {
            out.push(b'/');
            i += 2;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// The decoded value of a JSON string token.
fn json_string(token: &[u8]) -> Option<String> {
    serde_json::from_slice::<String>(token).ok()
}

/// The members of the top-level JSON object: (decoded key, byte range of the raw value).
fn top_level_members(body: &[u8]) -> Result<Vec<(String, std::ops::Range<usize>)>, String> {
    let mut s = Scanner { b: body, i: 0 };
    s.ws();
    if !s.eat(b'{') {
        return Err("the answer is not a JSON object".into());
    }
    let mut out = Vec::new();
    s.ws();
    if s.eat(b'}') {
        return Ok(out);
    }
    loop {
        s.ws();
        let kstart = s.i;
        s.string()?;
        let key = json_string(&body[kstart..s.i]).ok_or("a member name is not a valid JSON string")?;
        s.ws();
        if !s.eat(b':') {
            return Err(format!("no ':' after member {key:?}"));
        }
        s.ws();
        let vstart = s.i;
        s.value(0)?;
        out.push((key, vstart..s.i));
        s.ws();
        if s.eat(b',') {
            continue;
        }
        if s.eat(b'}') {
            break;
        }
        return Err(format!("unexpected byte at offset {} of the answer", s.i));
    }
    s.ws();
    if s.i != body.len() {
        return Err("trailing bytes after the answer's JSON object".into());
    }
    Ok(out)
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\r' | b'\n') {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn string(&mut self) -> Result<(), String> {
        if !self.eat(b'"') {
            return Err(format!("expected a string at offset {}", self.i));
        }
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    return Ok(());
                }
                _ => self.i += 1,
            }
        }
        Err("unterminated string in the answer".into())
    }
    fn value(&mut self, depth: usize) -> Result<(), String> {
        if depth > 64 {
            return Err("the answer nests too deeply".into());
        }
        match self.b.get(self.i) {
            Some(b'"') => self.string(),
            Some(b'{') | Some(b'[') => {
                let close = if self.b[self.i] == b'{' { b'}' } else { b']' };
                self.i += 1;
                loop {
                    self.ws();
                    if self.eat(close) {
                        return Ok(());
                    }
                    if close == b'}' {
                        self.string()?;
                        self.ws();
                        if !self.eat(b':') {
                            return Err(format!("expected ':' at offset {}", self.i));
                        }
                        self.ws();
                    }
                    self.value(depth + 1)?;
                    self.ws();
                    if self.eat(b',') {
                        continue;
                    }
                    if self.eat(close) {
                        return Ok(());
                    }
                    return Err(format!("unexpected byte at offset {} of the answer", self.i));
                }
            }
            Some(_) => {
                let start = self.i;
                while self.i < self.b.len()
                    && !matches!(self.b[self.i], b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n')
                {
                    self.i += 1;
                }
                match &self.b[start..self.i] {
                    b"true" | b"false" | b"null" => Ok(()),
                    t if !t.is_empty() && t.iter().all(|c| c.is_ascii_digit() || b"+-.eE".contains(c)) => Ok(()),
                    _ => Err(format!("unexpected token at offset {start} of the answer")),
                }
            }
            None => Err("the answer ends inside a value".into()),
        }
    }
}

// --- 3. notifications ------------------------------------------------------------------------

/// The charsets Alipay sends notifications in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    Utf8,
    /// `GBK` (and `GB2312`), decoded as GB18030, its superset.
    Gbk,
}

impl Charset {
    pub fn from_label(label: &str) -> Option<Charset> {
        match label.trim().to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Some(Charset::Utf8),
            "gbk" | "gb2312" | "gb18030" => Some(Charset::Gbk),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Charset::Utf8 => "utf-8",
            Charset::Gbk => "GBK",
        }
    }

    /// Bytes in this charset → text; `None` when they are not valid in it.
    pub fn decode(self, bytes: &[u8]) -> Option<String> {
        match self {
            Charset::Utf8 => std::str::from_utf8(bytes).ok().map(str::to_string),
            Charset::Gbk => encoding_rs::GB18030
                .decode_without_bom_handling_and_without_replacement(bytes)
                .map(|c| c.into_owned()),
        }
    }

    /// Text → bytes in this charset; `None` when a character cannot be written in it.
    pub fn encode(self, text: &str) -> Option<Vec<u8>> {
        match self {
            Charset::Utf8 => Some(text.as_bytes().to_vec()),
            Charset::Gbk => {
                let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
                (!unmappable).then(|| bytes.into_owned())
            }
        }
    }
}

/// A notification's parameters, decoded once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyParams {
    /// (name, raw value bytes in `charset`), in arrival order; names are unique.
    pub pairs: Vec<(String, Vec<u8>)>,
    pub charset: Charset,
    /// The values as text (decoded from `charset` once), in the order of `pairs`.
    texts: Vec<String>,
}

impl NotifyParams {
    /// Parameters from raw values in a charset; `None` if a value is not valid in it.
    pub fn new(pairs: Vec<(String, Vec<u8>)>, charset: Charset) -> Result<NotifyParams, String> {
        let mut texts = Vec::with_capacity(pairs.len());
        for (k, v) in &pairs {
            texts.push(
                charset
                    .decode(v)
                    .ok_or_else(|| format!("parameter {k:?} is not valid {} text", charset.label()))?,
            );
        }
        Ok(NotifyParams { pairs, charset, texts })
    }

    /// A parameter's raw bytes.
    pub fn raw(&self, name: &str) -> Option<&[u8]> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice())
    }

    /// A parameter's text.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .position(|(k, _)| k == name)
            .map(|i| self.texts[i].as_str())
    }

    /// Every parameter as text, for audit.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for ((k, _), v) in self.pairs.iter().zip(&self.texts) {
            m.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        serde_json::Value::Object(m)
    }

    /// The bytes to verify: every parameter but `sign` (and `sign_type` unless
    /// `keep_sign_type`), sorted by name, `name=value` joined with `&`, values raw. Empty values
    /// are kept (`name=`), as the official Java SDK does.
    pub fn sign_content(&self, keep_sign_type: bool) -> Vec<u8> {
        let mut sorted: Vec<&(String, Vec<u8>)> = self
            .pairs
            .iter()
            .filter(|(k, _)| k != "sign" && (keep_sign_type || k != "sign_type"))
            .collect();
        sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut out = Vec::new();
        for (i, (k, v)) in sorted.into_iter().enumerate() {
            if i > 0 {
                out.push(b'&');
            }
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v);
        }
        out
    }
}

/// Decode a notification body once. Accepts the body as Alipay POSTs it
/// (`application/x-www-form-urlencoded`), or — for operators holding a logged copy — a JSON
/// object of the already-decoded parameters (every value a string, as the samples keep them).
/// The charset is the one the notification declares in its `charset` parameter.
pub fn parse_notification(body: &[u8]) -> Result<NotifyParams, NotifyError> {
    let trimmed = trim_ascii(body);
    if trimmed.first() == Some(&b'{') {
        return parse_json_params(trimmed);
    }
    // Split and percent-decode to raw bytes; the charset is known only once `charset` is read.
    let mut raw_pairs: Vec<(String, Vec<u8>)> = Vec::new();
    for segment in body.split(|&b| b == b'&') {
        if segment.is_empty() {
            continue;
        }
        let (k, v) = match segment.iter().position(|&b| b == b'=') {
            Some(p) => (&segment[..p], &segment[p + 1..]),
            None => (segment, &b""[..]),
        };
        let key = String::from_utf8(form_decode(k))
            .map_err(|_| NotifyError::Malformed("a parameter name is not ASCII/UTF-8".into()))?;
        if key.is_empty() {
            return Err(NotifyError::Malformed("a parameter has an empty name".into()));
        }
        if raw_pairs.iter().any(|(k, _)| *k == key) {
            return Err(NotifyError::Malformed(format!("parameter {key:?} appears twice")));
        }
        raw_pairs.push((key, form_decode(v)));
    }
    if raw_pairs.is_empty() {
        return Err(NotifyError::Malformed("the body holds no parameters".into()));
    }
    let charset = declared_charset(
        raw_pairs
            .iter()
            .find(|(k, _)| k == "charset")
            .map(|(_, v)| v.as_slice()),
    )?;
    NotifyParams::new(raw_pairs, charset).map_err(NotifyError::Malformed)
}

fn declared_charset(raw: Option<&[u8]>) -> Result<Charset, NotifyError> {
    let raw = raw.ok_or_else(|| NotifyError::Malformed("the notification declares no charset".into()))?;
    let label =
        std::str::from_utf8(raw).map_err(|_| NotifyError::Malformed("the charset parameter is not text".into()))?;
    Charset::from_label(label)
        .ok_or_else(|| NotifyError::Malformed(format!("unknown charset {label:?} (expected utf-8 or GBK)")))
}

fn parse_json_params(body: &[u8]) -> Result<NotifyParams, NotifyError> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).map_err(|e| {
        NotifyError::Malformed(format!("the body looks like JSON but is not an object of strings: {e}"))
    })?;
    let mut texts = Vec::with_capacity(map.len());
    for (k, v) in map {
        match v {
            serde_json::Value::String(s) => texts.push((k, s)),
            other => {
                return Err(NotifyError::Malformed(format!(
                    "parameter {k:?} is {other} rather than the string sent on the wire"
                )))
            }
        }
    }
    let charset = declared_charset(texts.iter().find(|(k, _)| k == "charset").map(|(_, v)| v.as_bytes()))?;
    let mut pairs = Vec::with_capacity(texts.len());
    for (k, v) in texts {
        let bytes = charset.encode(&v).ok_or_else(|| {
            NotifyError::Malformed(format!("parameter {k:?} cannot be written in {}", charset.label()))
        })?;
        pairs.push((k, bytes));
    }
    NotifyParams::new(pairs, charset).map_err(NotifyError::Malformed)
}

/// `application/x-www-form-urlencoded` decoding of one name or value to raw bytes: `+` is a
/// space, `%XX` a byte; a `%` not followed by two hex digits stays as it is.
pub fn form_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < input.len() => match (hex(input[i + 1]), hex(input[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `application/x-www-form-urlencoded` encoding of raw bytes (unreserved characters kept, space
/// as `+`, everything else `%XX`).
pub fn form_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3 / 2);
    for &b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => out.push(b as char),
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(
                    char::from_digit((b >> 4) as u32, 16)
                        .unwrap_or('0')
                        .to_ascii_uppercase(),
                );
                out.push(
                    char::from_digit((b & 15) as u32, 16)
                        .unwrap_or('0')
                        .to_ascii_uppercase(),
                );
            }
        }
    }
    out
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// Which content rule a notification's signature verified under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentRule {
    /// `sign` and `sign_type` removed (trade notifications, `rsaCheckV1`).
    V1,
    /// Only `sign` removed (some open-platform notifications, `rsaCheckV2`).
    V2,
}

/// Verify a notification's signature: V1 first, then — when a `sign_type` is present — V2.
pub fn verify_notification_params(params: &NotifyParams, key: &PublicKey) -> Result<ContentRule, NotifyError> {
    let sign_raw = params
        .raw("sign")
        .ok_or_else(|| NotifyError::MissingSignature("no sign parameter".into()))?;
    let sign = std::str::from_utf8(sign_raw).map_err(|_| NotifyError::BadSignature("sign is not base64".into()))?;
    if sign.trim().is_empty() {
        return Err(NotifyError::MissingSignature("the sign parameter is empty".into()));
    }
    let sign_type = params.text("sign_type");
    match sign_type {
        None | Some(SIGN_TYPE) => {}
        Some(other) => {
            return Err(NotifyError::BadSignature(format!(
                "sign_type {other:?} is not accepted (only RSA2, SHA256withRSA)"
            )))
        }
    }
    match key.verify_sha256_base64(&params.sign_content(false), sign) {
        Ok(()) => return Ok(ContentRule::V1),
        Err(SignatureError::BadEncoding) => return Err(NotifyError::BadSignature("sign is not valid base64".into())),
        Err(SignatureError::Mismatch) => {}
    }
    if sign_type.is_some() && key.verify_sha256_base64(&params.sign_content(true), sign).is_ok() {
        return Ok(ContentRule::V2);
    }
    Err(NotifyError::BadSignature(
        "SHA256withRSA over the sorted parameters (without sign and sign_type, nor with sign_type) does not match the Alipay key"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_content_drops_sign_and_empty_values_and_sorts_by_byte_order() {
        let c = request_sign_content([
            ("timestamp", "2024-01-15 10:20:30"),
            ("sign", "xxx"),
            ("app_id", "1"),
            ("notify_url", ""),
            ("Zeta", "upper sorts first"),
            ("sign_type", "RSA2"),
        ]);
        assert_eq!(
            c,
            "Zeta=upper sorts first&app_id=1&sign_type=RSA2&timestamp=2024-01-15 10:20:30"
        );
    }

    #[test]
    fn the_answer_node_is_cut_out_byte_for_byte() {
        let body = br#"{"alipay_trade_query_response" : {"code":"10000","msg":"Success","a":{"b":"}{\"x"},"u":"https:\/\/x"} ,"sign":"c2ln","alipay_cert_sn":"abc"}"#;
        let r = split_response(body, "alipay.trade.query").unwrap();
        assert_eq!(r.node_key, "alipay_trade_query_response");
        assert_eq!(
            std::str::from_utf8(r.node).unwrap(),
            r#"{"code":"10000","msg":"Success","a":{"b":"}{\"x"},"u":"https:\/\/x"}"#
        );
        assert_eq!(r.sign.as_deref(), Some("c2ln"));
        assert_eq!(r.alipay_cert_sn.as_deref(), Some("abc"));
    }

    #[test]
    fn the_sign_may_come_before_the_node_and_error_responses_are_found() {
        let body = br#"{"sign":"c2ln","error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-signature"}}"#;
        let r = split_response(body, "alipay.trade.query").unwrap();
        assert_eq!(r.node_key, "error_response");
        assert!(r.node.starts_with(b"{\"code\":\"40002\""));
    }

    #[test]
    fn ambiguous_or_broken_answers_are_refused() {
        let twice = br#"{"alipay_trade_query_response":{"code":"10000"},"alipay_trade_query_response":{"code":"40004"},"sign":"x"}"#;
        assert!(split_response(twice, "alipay.trade.query")
            .unwrap_err()
            .contains("more than one"));
        assert!(split_response(br#"{"other_response":{}}"#, "alipay.trade.query").is_err());
        assert!(split_response(br#"{"alipay_trade_query_response":{"code":"1"#, "alipay.trade.query").is_err());
        assert!(split_response(b"<html>busy</html>", "alipay.trade.query").is_err());
        assert!(split_response(br#"{"alipay_trade_query_response":{}} x"#, "alipay.trade.query").is_err());
    }

    #[test]
    fn form_decoding_is_done_once_to_raw_bytes() {
        assert_eq!(
            form_decode(b"a+b%2Bc%E6%B0%B4%zz%4"),
            b"a b+c\xE6\xB0\xB4%zz%4".to_vec()
        );
        assert_eq!(form_encode("水 a+b/".as_bytes()), "%E6%B0%B4+a%2Bb%2F");
        assert_eq!(
            form_decode(form_encode(b"\x00\xff &=%").as_bytes()),
            b"\x00\xff &=%".to_vec()
        );
    }

    #[test]
    fn notification_values_are_decoded_in_the_declared_charset() {
        let gbk = b"charset=GBK&subject=%CB%AE%B7%D1&sign=x";
        let p = parse_notification(gbk).unwrap();
        assert_eq!(p.charset, Charset::Gbk);
        assert_eq!(p.text("subject"), Some("水费"));
        assert_eq!(
            p.raw("subject"),
            Some(&b"\xCB\xAE\xB7\xD1"[..]),
            "raw bytes kept for verification"
        );
        let bad = b"charset=utf-8&subject=%B7%D1";
        assert!(matches!(parse_notification(bad), Err(NotifyError::Malformed(m)) if m.contains("subject")));
        assert!(matches!(parse_notification(b"subject=x"), Err(NotifyError::Malformed(m)) if m.contains("charset")));
        assert!(
            matches!(parse_notification(b"charset=utf-8&a=1&a=2"), Err(NotifyError::Malformed(m)) if m.contains("twice"))
        );
        assert!(matches!(
            parse_notification(b"charset=latin1"),
            Err(NotifyError::Malformed(_))
        ));
    }

    #[test]
    fn notification_content_excludes_sign_and_sign_type_and_keeps_empty_values() {
        let p = parse_notification(b"sign_type=RSA2&charset=utf-8&b=&a=1&sign=zz").unwrap();
        assert_eq!(p.sign_content(false), b"a=1&b=&charset=utf-8".to_vec());
        assert_eq!(p.sign_content(true), b"a=1&b=&charset=utf-8&sign_type=RSA2".to_vec());
    }
}
