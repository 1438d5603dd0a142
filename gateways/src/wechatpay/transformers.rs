//! WeChat Pay API v3 wire data: request and answer bodies, notifications and the certificate
//! download, and the conversions between them and our terms. Behaviour lives elsewhere.
//!
//! Amounts on the wire are integer fen (`amount.total: 8880`). A JSON number that is not an
//! integer (`88.8`, `8880.0`) is refused when parsing, never rounded: serde's `i64` refuses it.

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};

use crate::gateway::GatewayError;

/// China Standard Time, in which WeChat Pay writes its times.
pub fn cst() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("valid offset")
}

/// RFC 3339 in China Standard Time, as WeChat Pay writes it: `2024-01-15T10:21:05+08:00`.
pub fn rfc3339_cst(t: DateTime<Utc>) -> String {
    t.with_timezone(&cst()).format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// Parse an RFC 3339 time with offset.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

/// Our fen to the wire's `total`/`refund`: a positive integer.
pub fn fen_to_wire(fen: i64, what: &str) -> Result<i64, GatewayError> {
    if fen <= 0 {
        return Err(GatewayError::Invalid(format!(
            "{what} must be at least 1 fen, got {fen}"
        )));
    }
    // WeChat Pay's amount fields are 32-bit integers.
    if fen > i32::MAX as i64 {
        return Err(GatewayError::Invalid(format!(
            "{what} of {fen} fen is beyond WeChat Pay's limit"
        )));
    }
    Ok(fen)
}

/// The wire's integer fen back to ours: positive.
pub fn wire_to_fen(total: i64, what: &str) -> Result<i64, String> {
    if total <= 0 {
        return Err(format!("{what} must be a positive number of fen, got {total}"));
    }
    Ok(total)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub total: i64,
    #[serde(default = "cny")]
    pub currency: String,
}

fn cny() -> String {
    "CNY".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payer {
    pub openid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct H5Info {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneInfo {
    pub payer_client_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h5_info: Option<H5Info>,
}

/// The body of a Native, JSAPI or H5 order (`/v3/pay/transactions/{native|jsapi|h5}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRequest {
    pub appid: String,
    pub mchid: String,
    pub description: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    pub notify_url: String,
    pub amount: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Payer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<SceneInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeAnswer {
    pub code_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsapiAnswer {
    pub prepay_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct H5Answer {
    pub h5_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionAmount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_currency: Option<String>,
}

/// A transaction: the query answer, and the decrypted resource of a payment notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub appid: String,
    pub mchid: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_type: Option<String>,
    pub trade_state: String,
    #[serde(default)]
    pub trade_state_desc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Payer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<TransactionAmount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseRequest {
    pub mchid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAmountRequest {
    pub refund: i64,
    pub total: i64,
    pub currency: String,
}

/// The body of `POST /v3/refund/domestic/refunds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequestBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    pub out_refund_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    pub amount: RefundAmountRequest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAmount {
    pub total: i64,
    pub refund: i64,
    #[serde(default)]
    pub payer_total: i64,
    #[serde(default)]
    pub payer_refund: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_refund: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount_refund: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// A refund: the answer of the refund and refund-query calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub refund_id: String,
    pub out_refund_no: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    #[serde(default)]
    pub channel: String,
    #[serde(default)]
    pub user_received_account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default)]
    pub create_time: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funds_account: Option<String>,
    pub amount: RefundAmount,
}

/// The decrypted resource of a refund notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundNotice {
    pub mchid: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub out_refund_no: String,
    pub refund_id: String,
    pub refund_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default)]
    pub user_received_account: String,
    pub amount: RefundNoticeAmount,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundNoticeAmount {
    pub total: i64,
    pub refund: i64,
    #[serde(default)]
    pub payer_total: i64,
    #[serde(default)]
    pub payer_refund: i64,
}

/// `GET /v3/bill/tradebill` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillAnswer {
    pub hash_type: String,
    pub hash_value: String,
    pub download_url: String,
}

/// An `AEAD_AES_256_GCM` encrypted resource (notifications, certificates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedResource {
    pub algorithm: String,
    pub ciphertext: String,
    #[serde(default)]
    pub associated_data: String,
    pub nonce: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_type: Option<String>,
}

/// A notification's envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationEnvelope {
    pub id: String,
    #[serde(default)]
    pub create_time: String,
    #[serde(default)]
    pub resource_type: String,
    pub event_type: String,
    #[serde(default)]
    pub summary: String,
    pub resource: EncryptedResource,
}

/// One item of `GET /v3/certificates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateItem {
    pub serial_no: String,
    pub effective_time: String,
    pub expire_time: String,
    pub encrypt_certificate: EncryptedResource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificatesAnswer {
    pub data: Vec<CertificateItem>,
}

/// An error answer: `{"code","message","detail"?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_trip_between_fen_and_the_wire() {
        for fen in [1i64, 99, 100, 8880, 123_456_789] {
            let wire = Amount {
                total: fen_to_wire(fen, "total").unwrap(),
                currency: "CNY".into(),
            };
            let json = serde_json::to_string(&wire).unwrap();
            assert_eq!(json, format!("{{\"total\":{fen},\"currency\":\"CNY\"}}"));
            let back: Amount = serde_json::from_str(&json).unwrap();
            assert_eq!(wire_to_fen(back.total, "total"), Ok(fen));
        }
        assert!(fen_to_wire(0, "total").is_err());
        assert!(fen_to_wire(-5, "total").is_err());
        assert!(fen_to_wire(i32::MAX as i64 + 1, "total").is_err());
        assert!(wire_to_fen(0, "total").is_err());
    }

    #[test]
    fn a_wire_amount_with_decimals_is_refused_not_rounded() {
        for bad in ["88.8", "8880.0", "1.005", "\"8880\""] {
            let r = serde_json::from_str::<Amount>(&format!("{{\"total\":{bad}}}"));
            assert!(r.is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn times_are_written_in_china_standard_time_and_read_with_any_offset() {
        let t = parse_time("2024-01-15T10:21:05+08:00").unwrap();
        assert_eq!(t, parse_time("2024-01-15T02:21:05Z").unwrap());
        assert_eq!(rfc3339_cst(t), "2024-01-15T10:21:05+08:00");
        assert!(parse_time("2024-01-15 10:21:05").is_err());
    }
}
