//! UnionPay online gateway (ACP "全渠道") 5.1.0, B2C gateway payment, signMethod `01`.
//!
//! # The flow
//!
//! 1. **Pay.** [`UnionPayClient::create_order`](crate::gateway::PaymentGateway::create_order)
//!    builds and signs the front consume (txnType 01, bizType 000201; `channelType` 07 for web,
//!    08 for WAP) and hands it back as [`PayerAction::Form`](crate::gateway::PayerAction::Form):
//!    an auto-submitting form the payer's browser posts to `frontTransReq.do`. No request leaves
//!    the service. `payTimeout` is the order's `expires_at`. [`UnionPayClient::back_consume`]
//!    pays server to server with a token the payer opened earlier (bizType 000902).
//! 2. **Notification.** UnionPay POSTs the back notification (form-urlencoded) to `backUrl`,
//!    up to 5 times (about 1, 2, 4, 5 minutes apart) until it gets an HTTP 200.
//!    `verify_notification` checks its `signPubKeyCert` against the root and middle certificates
//!    and its signature, then says what it means ([`NotificationEvent`](crate::gateway::NotificationEvent)). The front notification
//!    (browser return) is display only.
//! 3. **Query.** `queryTrans.do` by orderId + txnTime (the order's `created_at`). The answer's
//!    own respCode 00 only says the query worked; the transaction's result is `origRespCode`:
//!    `00`/`A6` paid, `03`/`04`/`05` in progress (query again later), others failed; respCode 34
//!    is "no such transaction" ([`PaymentState::NotFound`](crate::outcome::PaymentState)).
//! 4. **Close.** There is none for unpaid orders: `close_order` queries and answers from that
//!    (see its docs) — call it after the order's expiry.
//! 5. **Refund.** txnType 04 with its own orderId (our refund number) and txnTime, the payment's
//!    queryId as `origQryId`, and our order number in `reqReserved` (echoed back). Accepted
//!    synchronously, settled asynchronously by notification.
//! 6. **Settlement.** File transfer (txnType 76, fileType 00, settleDate MMDD) on the file host;
//!    `fileContent` is base64 of a zlib-deflated zip of GBK fixed-width files ([`settlement`]).
//!
//! # Pitfalls handled
//!
//! - The double hash: we sign the *hex text* of the SHA-256 of the sign string ([`sign`]).
//! - `certId` is the signing certificate's serial in decimal, of any length.
//! - An embedded `signPubKeyCert` is never trusted by itself: chain to the middle and root,
//!   validity of all three, and the CN check that keeps merchant certificates (which chain to
//!   the same CFCA middle) from posing as UnionPay ([`verify`]).
//! - Synchronous answers are not URL-encoded and nest `{…}`: parsed by scanning, never with a
//!   form decoder ([`transformers::parse_answer`]); notifications are form-decoded exactly once.
//! - Sign strings of answers keep empty values; requests drop them.
//! - The clearing day turns at 23:00 Beijing time; `MMDD`/`MMDDhhmmss` carry no year, which
//!   comes from the nearest year to a known date (year boundary included).
//! - UnionPay's order key is (merId, orderId, txnTime): every query sends the original txnTime.
//! - Amounts are fen strings: anything with a decimal point is refused, never rounded.
//! - Refund notifications name the refund's orderId only: our order number rides in
//!   `reqReserved`.
//! - `04` is refund (退货) and `31` undo (撤销) — not the other way round, as one SDK maps them.
//!
//! # Files
//!
//! `sign.rs` (signing identity, sign string), `verify.rs` (trust store, chain, message
//! verification), `transformers.rs` (wire fields, syntaxes, amounts, times, conversions),
//! `codes.rs` (respCode and txnType, exhaustive), `client.rs` ([`UnionPayClient`],
//! [`UnionPayConfig`]), `settlement.rs` (the ZM/ZME parser).

pub mod client;
pub mod codes;
pub mod settlement;
pub mod sign;
pub mod transformers;
pub mod verify;

use chrono::{DateTime, FixedOffset, Utc};

pub use client::{
    BackConsumeAccepted, UnionPayClient, UnionPayConfig, UnionPayConfigError, UnionPaySigningKey, PRODUCTION_FILE_URL,
    PRODUCTION_GATEWAY_URL, TEST_FILE_URL, TEST_GATEWAY_URL,
};
pub use codes::{RespCode, TxnType};
pub use sign::{SigningIdentity, SigningKeyError};
pub use transformers::TokenPayData;
pub use verify::{TrustError, TrustStore, UnionPayEnvironment};

use crate::gateway::{IncomingNotification, NotifyError, VerifiedNotification};

/// China Standard Time, in which UnionPay writes every time.
pub(crate) fn cst() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("a valid offset")
}

/// Verify a back notification knowing only UnionPay's certificates, for `meterpay notify
/// verify`: exactly what [`UnionPayClient`]'s `verify_notification` does.
///
/// `gateway_key` is the file with UnionPay's root and middle certificates (PEM blocks in any
/// order, e.g. `cat acp_prod_root.cer acp_prod_middle.cer`). The environment is inferred from
/// them (CFCA's test CAs name themselves `TEST`; see [`TrustStore::from_bundle`]). `apiv3_key` is
/// WeChat's and is ignored.
pub fn inspect_notification(
    gateway_key: &[u8],
    _apiv3_key: Option<&[u8]>,
    notification: IncomingNotification<'_>,
    now: DateTime<Utc>,
) -> Result<VerifiedNotification, NotifyError> {
    let trust = TrustStore::from_bundle(gateway_key, None)
        .map_err(|e| NotifyError::UnknownKey(format!("UnionPay's root and middle certificates: {e}")))?;
    UnionPayClient::verify_with(&trust, notification, now)
}
