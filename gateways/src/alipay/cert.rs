//! Certificate mode (公钥证书模式): the serial numbers Alipay names certificates by
//! (gateways.md §1.5, vector A4).
//!
//! A certificate's SN is the lowercase hex MD5 of `issuerDN + serialDecimal`, where issuerDN is
//! the issuer's attributes written most-specific-first (the reverse of their DER order) as
//! `CN=…,OU=…,O=…,C=…` with no spaces, and serialDecimal the serial number in base 10.
//! `app_cert_sn` is that of `appCertPublicKey_<appid>.crt`; `alipay_root_cert_sn` joins with `_`,
//! in file order, the SNs of the RSA-signed certificates (signature algorithm OID under
//! `1.2.840.113549.1.1`) of `alipayRootCert.crt`. That bundle also holds SM2 and ECDSA roots,
//! which are skipped — and skipped even when they cannot be parsed, since some parsers reject
//! the SM2 one. An RSA-signed certificate that cannot be read is an error, never skipped.

use der::Decode;
use md5::{Digest, Md5};

use crate::crypto::{der_blocks, public_key_of_certificate, KeyError, PublicKey};

/// The OID arc of RSA signature algorithms (`sha256WithRSAEncryption` is `…1.1.11`).
const RSA_SIGNATURE_ARC: &str = "1.2.840.113549.1.1";

/// The SN of the first certificate in `input` (PEM, bare base64 or DER): `app_cert_sn`, or the
/// SN of `alipayCertPublicKey_RSA2.crt`.
pub fn cert_sn(input: &[u8]) -> Result<String, KeyError> {
    let (_, der) = der_blocks(input)
        .into_iter()
        .next()
        .ok_or_else(|| KeyError::Certificate("no certificate found".into()))?;
    let cert = x509_cert::Certificate::from_der(&der).map_err(|e| KeyError::Certificate(e.to_string()))?;
    sn_of(&cert)
}

/// `alipay_root_cert_sn` of a root bundle: the RSA-signed certificates' SNs joined with `_`.
pub fn root_cert_sn(bundle: &[u8]) -> Result<String, KeyError> {
    let mut sns = Vec::new();
    for (i, (_, der)) in der_blocks(bundle).into_iter().enumerate() {
        match x509_cert::Certificate::from_der(&der) {
            Ok(cert) => {
                if cert
                    .signature_algorithm()
                    .oid
                    .to_string()
                    .starts_with(RSA_SIGNATURE_ARC)
                {
                    sns.push(sn_of(&cert)?);
                }
            }
            Err(e) => {
                // Only a certificate that is not RSA-signed may be skipped unread.
                if outer_signature_oid(&der).is_some_and(|oid| oid.starts_with(RSA_SIGNATURE_ARC)) {
                    return Err(KeyError::Certificate(format!(
                        "certificate {} of the root bundle is RSA-signed but cannot be read: {e}",
                        i + 1
                    )));
                }
            }
        }
    }
    if sns.is_empty() {
        return Err(KeyError::Certificate(
            "the root bundle holds no RSA-signed certificate".into(),
        ));
    }
    Ok(sns.join("_"))
}

/// The public key in a certificate file (the first certificate).
pub fn cert_public_key(input: &[u8]) -> Result<PublicKey, KeyError> {
    let (_, der) = der_blocks(input)
        .into_iter()
        .next()
        .ok_or_else(|| KeyError::Certificate("no certificate found".into()))?;
    let cert = x509_cert::Certificate::from_der(&der).map_err(|e| KeyError::Certificate(e.to_string()))?;
    public_key_of_certificate(&cert)
}

/// `issuerDN + serialDecimal`, the text that is hashed (exposed for tests and diagnostics).
pub fn sn_source(cert: &x509_cert::Certificate) -> Result<String, KeyError> {
    let tbs = cert.tbs_certificate();
    let mut parts: Vec<String> = Vec::new();
    for atv in tbs.issuer().iter() {
        let name = short_name(&atv.oid.to_string());
        let value = attribute_text(&atv.value)
            .ok_or_else(|| KeyError::Certificate(format!("issuer attribute {name} is not a string")))?;
        parts.push(format!("{name}={value}"));
    }
    parts.reverse();
    Ok(format!(
        "{}{}",
        parts.join(","),
        decimal(tbs.serial_number().as_bytes())
    ))
}

fn sn_of(cert: &x509_cert::Certificate) -> Result<String, KeyError> {
    Ok(hex::encode(Md5::digest(sn_source(cert)?.as_bytes())))
}

/// The short names the SDKs write; any other attribute is written by its dotted OID.
fn short_name(oid: &str) -> String {
    match oid {
        "2.5.4.3" => "CN".into(),
        "2.5.4.11" => "OU".into(),
        "2.5.4.10" => "O".into(),
        "2.5.4.6" => "C".into(),
        "2.5.4.7" => "L".into(),
        "2.5.4.8" => "ST".into(),
        "2.5.4.9" => "STREET".into(),
        "0.9.2342.19200300.100.1.25" => "DC".into(),
        "0.9.2342.19200300.100.1.1" => "UID".into(),
        other => other.to_string(),
    }
}

/// A directory string's text (UTF8String, PrintableString, IA5String, TeletexString as Latin-1,
/// BMPString as UTF-16BE).
fn attribute_text(value: &der::Any) -> Option<String> {
    use der::{Tag, Tagged};
    let bytes = value.value();
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::VisibleString => {
            std::str::from_utf8(bytes).ok().map(str::to_string)
        }
        Tag::TeletexString => Some(bytes.iter().map(|&b| b as char).collect()),
        Tag::BmpString => {
            if !bytes.len().is_multiple_of(2) {
                return None;
            }
            let units: Vec<u16> = bytes.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// A big-endian unsigned integer (a serial number's bytes) in base 10.
fn decimal(bytes: &[u8]) -> String {
    let mut num: Vec<u8> = bytes.iter().copied().skip_while(|&b| b == 0).collect();
    if num.is_empty() {
        return "0".into();
    }
    let mut digits = Vec::new();
    while !num.is_empty() {
        let mut rem: u32 = 0;
        let mut next = Vec::with_capacity(num.len());
        for &b in &num {
            let cur = rem * 256 + b as u32;
            let q = cur / 10;
            rem = cur % 10;
            if !(next.is_empty() && q == 0) {
                next.push(q as u8);
            }
        }
        digits.push(b'0' + rem as u8);
        num = next;
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// The outer `signatureAlgorithm` OID of a certificate, read with the least parsing possible
/// (for certificates the full parser refuses).
fn outer_signature_oid(der: &[u8]) -> Option<String> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE { OID, … }, … }
    let (tag, body, _) = tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, rest) = tlv(body)?; // tbsCertificate
    let (tag, alg, _) = tlv(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _) = tlv(alg)?;
    if tag != 0x06 {
        return None;
    }
    der::asn1::ObjectIdentifier::from_bytes(oid).ok().map(|o| o.to_string())
}

/// One DER TLV: (tag, value, rest).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)? as usize;
    let (len, hdr) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    if end > b.len() {
        return None;
    }
    Some((tag, &b[hdr..end], &b[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_numbers_are_written_in_base_10() {
        assert_eq!(decimal(&[0x00]), "0");
        assert_eq!(decimal(&[0x01, 0x00]), "256");
        assert_eq!(
            decimal(&[0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            "18446744073709551615"
        );
        assert_eq!(
            decimal(&[0x6f, 0x2d, 0x1a, 0x0b, 0x3c, 0x4d, 0x5e, 0x6f]),
            "8011087947720646255"
        );
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(cert_sn(b"not a certificate").is_err());
        assert!(root_cert_sn(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
        assert_eq!(outer_signature_oid(&[0x30, 0x80]), None);
    }
}
