//! WeChat Pay API v3, direct merchant (gateways.md §2, settlement-files.md §2).
//!
//! # The flow
//! 1. **Create** a Native (QR), JSAPI (inside WeChat, needs the payer's openid) or H5 (mobile
//!    browser, needs the payer's IP) order: `POST /v3/pay/transactions/{native|jsapi|h5}`. The
//!    payer gets the `code_url` as a QR code, the JSAPI parameters with our client-side
//!    `paySign` ([`sign::jsapi_params`]), or the `h5_url` (plus `redirect_url`).
//! 2. WeChat Pay **notifies** `notify_url` (`TRANSACTION.SUCCESS`, `REFUND.SUCCESS|ABNORMAL|CLOSED`)
//!    on its retry schedule until answered 200/204 ([`notify::ack`]). We verify over the raw body
//!    ([`verify`]), decrypt the resource with the APIv3 key ([`aead`]) and map it ([`notify`]).
//! 3. **Query** by `out_trade_no` (a sweeper for lost notifications), **close** unpaid orders
//!    (204), **refund** (`PROCESSING`, then a notification) and query the refund.
//! 4. **Trade bill**: `GET /v3/bill/tradebill` (signed JSON: SHA-1 and a download URL), then GET
//!    the URL (our request is signed; the answer is not), gunzip, check the SHA-1 of the
//!    decompressed bytes, parse ([`settlement`]).
//!
//! # Pitfalls handled
//! - Signatures are checked over the **exact bytes** received, never re-serialised JSON.
//! - `Wechatpay-Serial` picks the key: a platform certificate serial or a public-key id
//!   `PUB_KEY_ID_…`; both modes can be configured at once (migration). An unknown certificate
//!   serial makes the client download the certificates once ([`WechatPayClient::refresh_certificates`]);
//!   during a rotation old and new certificates are both trusted.
//! - The 5-minute timestamp window is checked against an injected `now` for notifications.
//! - `WECHATPAY/SIGNTEST/` probes fail verification like any bad signature.
//! - The APIv3 key is used verbatim (32 bytes, AES-256-GCM); 16-byte SDK test keys select AES-128.
//! - The canonical URL signed is the path and query exactly as sent (a base path included).
//! - Bills: BOM, CRLF, back-ticks, summary rows checked against the rows, 5-decimal fees kept.
//!
//! Files: [`sign`] (Authorization, paySign), [`verify`] (keys and answer/notification
//! verification), [`aead`], [`notify`], [`status`] (exhaustive mappings), [`transformers`] (wire
//! structs), [`client`], [`settlement`].

pub mod aead;
pub mod client;
pub mod notify;
pub mod settlement;
pub mod sign;
pub mod status;
pub mod transformers;
pub mod verify;

use chrono::{DateTime, Utc};

pub use aead::ApiV3Key;
pub use client::{merchant_serial_from_certificate, WechatPayClient, WechatPayConfig, WechatPayConfigError};
pub use verify::{PlatformCertificate, WechatPayKeys};

use crate::crypto::load_public_key;
use crate::gateway::{IncomingNotification, NotifyError, VerifiedNotification};

/// Verify a notification with only WeChat Pay's key, as file bytes (for `meterpay notify
/// verify`): exactly what [`WechatPayClient`]'s `verify_notification` does.
///
/// `gateway_key`: platform certificate(s) (PEM, one or a bundle; bare base64; DER), used only
/// for the serial each names; or a bare public key (PEM `PUBLIC KEY`, any form), which carries no
/// id and so is tried whatever `Wechatpay-Serial` says. `apiv3_key`: the APIv3 key file's bytes
/// (32 bytes; 16 accepted for the SDK test vectors; surrounding whitespace ignored).
pub fn inspect_notification(
    gateway_key: &[u8],
    apiv3_key: Option<&[u8]>,
    notification: IncomingNotification<'_>,
    now: DateTime<Utc>,
) -> Result<VerifiedNotification, NotifyError> {
    let mut keys = WechatPayKeys::new();
    match PlatformCertificate::parse_all(gateway_key) {
        Ok(certs) => keys.add_certificates(certs),
        Err(cert_err) => match load_public_key(gateway_key) {
            Ok(k) => keys.set_unnamed_key(k),
            Err(key_err) => {
                return Err(NotifyError::UnknownKey(format!(
                    "the gateway key is neither a platform certificate ({cert_err}) nor a public key ({key_err})"
                )))
            }
        },
    }
    let apiv3 = apiv3_key
        .map(ApiV3Key::new_allowing_test_length)
        .transpose()
        .map_err(|e| NotifyError::Decrypt(format!("the APIv3 key: {e}")))?;
    notify::verify_notification(&keys, apiv3.as_ref(), notification, now)
}
