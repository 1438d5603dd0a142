//! Operator tools over all three gateways, for when a callback or a file is disputed: verify a
//! captured notification with only the gateway's key, and parse a settlement file. The service's
//! `meterpay notify verify` and `meterpay settlement parse` commands are thin wrappers of these.

use chrono::{DateTime, Utc};

use crate::gateway::{Channel, IncomingNotification, NotifyError, VerifiedNotification};
use crate::settlement::{SettlementError, SettlementFile};

/// Captured headers, one `Name: value` per line (blank lines and `#` comments ignored; a value
/// keeps everything after the first `:` but the surrounding spaces).
pub fn parse_header_lines(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("headers line {}: expected `Name: value`, got {line:?}", i + 1))?;
        if name.trim().is_empty() || name.contains(' ') {
            return Err(format!("headers line {}: {name:?} is not a header name", i + 1));
        }
        out.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(out)
}

/// Join key or certificate files into one input: PEM files are kept as they are, DER or bare
/// base64 certificates are wrapped as PEM, so several files (UnionPay's root and middle) can be
/// given as one bundle.
pub fn join_key_files(files: &[Vec<u8>]) -> Vec<u8> {
    if files.len() == 1 {
        return files[0].clone();
    }
    let mut out = Vec::new();
    for f in files {
        let is_pem = std::str::from_utf8(f)
            .map(|t| t.contains("-----BEGIN "))
            .unwrap_or(false);
        if is_pem {
            out.extend_from_slice(f);
        } else {
            for (_, der) in crate::crypto::der_blocks(f) {
                let b64 = crate::crypto::b64(&der);
                out.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
                for chunk in b64.as_bytes().chunks(64) {
                    out.extend_from_slice(chunk);
                    out.push(b'\n');
                }
                out.extend_from_slice(b"-----END CERTIFICATE-----\n");
            }
        }
        if !out.ends_with(b"\n") {
            out.push(b'\n');
        }
    }
    out
}

/// Verify a captured notification of `channel` with only the gateway's key (any form it hands
/// out; for UnionPay the root and middle certificates) and, for WeChat Pay, the APIv3 key.
pub fn inspect_notification(
    channel: Channel,
    gateway_key: &[u8],
    apiv3_key: Option<&[u8]>,
    headers: &[(String, String)],
    body: &[u8],
    at: DateTime<Utc>,
) -> Result<VerifiedNotification, NotifyError> {
    let n = IncomingNotification { headers, body };
    match channel {
        Channel::Alipay => crate::alipay::inspect_notification(gateway_key, apiv3_key, n, at),
        Channel::Wechatpay => crate::wechatpay::inspect_notification(gateway_key, apiv3_key, n, at),
        Channel::Unionpay => crate::unionpay::inspect_notification(gateway_key, apiv3_key, n, at),
    }
}

/// Parse a settlement file of `channel`, as downloaded.
pub fn parse_settlement(channel: Channel, bytes: &[u8]) -> Result<SettlementFile, SettlementError> {
    match channel {
        Channel::Alipay => crate::alipay::settlement::parse(bytes),
        Channel::Wechatpay => crate::wechatpay::settlement::parse(bytes),
        Channel::Unionpay => crate::unionpay::settlement::parse(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lines_parse_and_bad_lines_are_named() {
        let h = parse_header_lines("Wechatpay-Serial: ABC\r\n\n# captured\nWechatpay-Signature: a:b=c==\n").unwrap();
        assert_eq!(
            h,
            vec![
                ("Wechatpay-Serial".to_string(), "ABC".to_string()),
                ("Wechatpay-Signature".to_string(), "a:b=c==".to_string())
            ]
        );
        let e = parse_header_lines("Wechatpay-Serial ABC\n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn der_files_are_wrapped_so_bundles_join() {
        let der = vec![0x30u8, 0x03, 0x02, 0x01, 0x05];
        let pem = b"-----BEGIN CERTIFICATE-----\nMAMCAQU=\n-----END CERTIFICATE-----".to_vec();
        let joined = join_key_files(&[der.clone(), pem]);
        let blocks = crate::crypto::der_blocks(&joined);
        assert_eq!(blocks.len(), 2);
        assert!(blocks.iter().all(|(_, d)| d == &der));
    }
}
