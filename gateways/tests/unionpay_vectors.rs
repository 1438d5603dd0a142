//! UnionPay 5.1.0's published vectors (test-vectors.md "UnionPay 5.1.0"): U1 (a real
//! test-environment notification), U2 (the SDKs' test signing certificates) and D5 (a consume
//! request signed with one of them). Keys and samples are read from `../shared/samples/`; the
//! expected values are ours, here. Without the samples each test prints `!!! SKIPPED` and passes.

use chrono::{TimeZone, Utc};
use meterpay_gateways::gateway::{CreateOrder, IncomingNotification, NotifyError, PayMethod, PayerAction};
use meterpay_gateways::unionpay::sign::{sign_string, SigningIdentity, SigningKeyError};
use meterpay_gateways::unionpay::transformers::{field, front_consume, parse_form};
use meterpay_gateways::unionpay::verify::{verify_fields, TrustStore, UnionPayEnvironment};
use meterpay_gateways::unionpay::{inspect_notification, UnionPayClient, UnionPayConfig, UnionPaySigningKey};
use meterpay_gateways::{crypto, unionpay};

/// `../shared/samples/<rel>` from the worktree root, or None (with a loud skip line).
fn sample(rel: &str, test: &str) -> Option<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the worktree root");
    let path = root.join("../shared/samples").join(rel);
    match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(_) => {
            eprintln!("!!! SKIPPED {test}: {} is absent", path.display());
            None
        }
    }
}

const U1: &str = "unionpay/notify_front_txnType79_omnipay-unionpay.txt";
const ROOT: &str = "vectors/unionpay/python-unionpay_acp_test_root.cer";
const MIDDLE: &str = "vectors/unionpay/python-unionpay_acp_test_middle.cer";
const SMARTWALLE_PFX: &str = "vectors/unionpay/smartwalle-unionpay_acp_test_sign.pfx";
const OLD_PFX: &str = "vectors/unionpay/python-unionpay_acp_test_sign_old.pfx";

/// U1 was sent on 2017-10-30 22:36:23 Beijing time (its txnTime); its certificate expired on
/// 2017-12-04, so it is verified at the moment it was sent.
fn u1_sent_at() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2017, 10, 30, 14, 36, 23).unwrap()
}

fn test_trust(test: &str, env: UnionPayEnvironment) -> Option<TrustStore> {
    let root = sample(ROOT, test)?;
    let middle = sample(MIDDLE, test)?;
    Some(TrustStore::new(&root, &middle, env).expect("the sample root and middle load and chain"))
}

#[test]
fn u1_the_published_test_notification_verifies_with_its_embedded_certificate_chained_to_the_sample_root() {
    let test = "u1_the_published_test_notification_verifies…";
    let (Some(body), Some(trust)) = (sample(U1, test), test_trust(test, UnionPayEnvironment::Test)) else {
        return;
    };
    let fields = parse_form(&body).expect("U1 is form-urlencoded");
    assert_eq!(
        crypto::sha256_hex(sign_string(&fields, false).as_bytes()),
        "e9fa180c291a5d8016c720b14a7339bc26f0af44105ab4ba74e57ff7975e80da",
        "the sign string's SHA-256 hex (test-vectors.md U1)"
    );
    verify_fields(&trust, &fields, u1_sent_at()).expect("U1 verifies: chain, validity, CN and signature");

    // The embedded certificate is the one the vector names.
    let pem = field(&fields, "signPubKeyCert").unwrap();
    assert!(pem.contains("\r\n"), "the PEM keeps its CRLF line ends");
    let cert = crypto::load_certificates(pem.as_bytes()).unwrap().remove(0);
    assert_eq!(
        unionpay::sign::decimal_serial(cert.tbs_certificate().serial_number().as_bytes()),
        "68759585097"
    );
}

#[test]
fn u1_verifies_through_inspect_notification_and_is_reported_as_no_payment_or_refund() {
    let test = "u1_verifies_through_inspect_notification…";
    let (Some(body), Some(root), Some(middle)) = (sample(U1, test), sample(ROOT, test), sample(MIDDLE, test)) else {
        return;
    };
    let bundle = [root, b"\n".to_vec(), middle].concat();
    let n = IncomingNotification {
        headers: &[],
        body: &body,
    };
    // The signature and chain verify (the CFCA TEST bundle means the test environment), then the
    // content is named: a token "open" (txnType 79) carries nothing to apply.
    let err = inspect_notification(&bundle, None, n, u1_sent_at()).unwrap_err();
    match err {
        NotifyError::Malformed(m) => assert!(m.contains("txnType 79"), "{m}"),
        other => panic!("expected the txnType to be named, got {other:?}"),
    }
}

#[test]
fn u1_is_refused_once_its_certificate_has_expired_or_in_production_or_after_any_change() {
    let test = "u1_is_refused_once_its_certificate_has_expired…";
    let (Some(body), Some(trust)) = (sample(U1, test), test_trust(test, UnionPayEnvironment::Test)) else {
        return;
    };
    let fields = parse_form(&body).unwrap();
    let later = Utc.with_ymd_and_hms(2018, 1, 1, 0, 0, 0).unwrap();
    match verify_fields(&trust, &fields, later) {
        Err(NotifyError::UnknownKey(m)) => assert!(m.contains("not valid at"), "{m}"),
        other => panic!("an expired signer must be refused: {other:?}"),
    }
    let prod = test_trust(test, UnionPayEnvironment::Production).unwrap();
    match verify_fields(&prod, &fields, u1_sent_at()) {
        Err(NotifyError::UnknownKey(m)) => assert!(m.contains("00040000:SIGN"), "{m}"),
        other => panic!("production accepts only 中国银联股份有限公司: {other:?}"),
    }
    for name in ["orderId", "respCode", "txnTime", "merId", "tokenPayData", "accNo"] {
        let mut changed = fields.clone();
        for (k, v) in changed.iter_mut() {
            if k == name {
                v.push('0');
            }
        }
        assert!(
            matches!(
                verify_fields(&trust, &changed, u1_sent_at()),
                Err(NotifyError::BadSignature(_))
            ),
            "changing {name} breaks the signature"
        );
    }
    let unsigned: Vec<_> = fields.iter().filter(|(k, _)| k != "signature").cloned().collect();
    assert!(matches!(
        verify_fields(&trust, &unsigned, u1_sent_at()),
        Err(NotifyError::MissingSignature(_))
    ));
}

#[test]
fn u2_both_published_test_pfx_files_load_with_their_cert_ids_including_the_old_rc2_one() {
    let test = "u2_both_published_test_pfx_files_load…";
    let (Some(new), Some(old)) = (sample(SMARTWALLE_PFX, test), sample(OLD_PFX, test)) else {
        return;
    };
    let a = SigningIdentity::from_pkcs12(&new, "000000").expect("the 3DES pfx loads");
    assert_eq!(a.cert_id(), "69903319369");
    assert!(a.subject().contains("700000000000001:SIGN"), "{}", a.subject());
    let b = SigningIdentity::from_pkcs12(&old, "000000").expect("the RC2-40 pfx loads (p12-keystore PBES1)");
    assert_eq!(b.cert_id(), "68759663125");
    assert!(matches!(
        SigningIdentity::from_pkcs12(&new, "wrong"),
        Err(SigningKeyError::Pkcs12(_))
    ));
}

/// D5's order, in our terms.
fn d5_order() -> CreateOrder {
    let cst = |h, m, s| {
        chrono::FixedOffset::east_opt(8 * 3600)
            .unwrap()
            .with_ymd_and_hms(2024, 1, 15, h, m, s)
            .unwrap()
    };
    CreateOrder {
        order_no: "WE20240115000001".into(),
        amount_fen: 8880,
        subject: "2024-01 water".into(),
        notify_url: "https://example.com/pay/unionpay/back".into(),
        return_url: Some("https://example.com/pay/unionpay/front".into()),
        expires_at: cst(10, 35, 30).with_timezone(&Utc),
        created_at: cst(10, 20, 30).with_timezone(&Utc),
        method: PayMethod::Web,
        payer_openid: None,
        payer_ip: None,
    }
}

const D5_SIGN_STRING: &str = "accessType=0&backUrl=https://example.com/pay/unionpay/back&bizType=000201&certId=69903319369&channelType=07&currencyCode=156&encoding=UTF-8&frontUrl=https://example.com/pay/unionpay/front&merId=777290058110048&orderId=WE20240115000001&payTimeout=20240115103530&signMethod=01&txnAmt=8880&txnSubType=01&txnTime=20240115102030&txnType=01&version=5.1.0";
const D5_DIGEST: &str = "70f5785311c08428269fe1c49ac53a1d78a040e091b4d7f59099bb8b48fd5cd6";
const D5_SIGNATURE: &str = "OvUVg1vmKlRw6fh9Imzzr1A6cUizWMstMHHulA9YLBaeGYCu6CAnYQtjd2S85oLk+XiLZllxGpohoR9QhCtMpamDf3WrN/yOGo+44p4i9WAtpVGjy0HcpVwFC3zmicXNjiHDa+K+GVSSlBjKLX7fI2+qJgorCOchx/bAPEfrCCodyqZ95zmXr9eImpxoRiEJv3OYiA5N2EpaOGYdQhuF1p+myj/47htnvQhD8p6A51iZmUJrSc9lZ1ZWimagqkI5pcQeblcioYkrdYvofUfT6P3seCf+nzmrdpsPHEVtqb/EQTJDh6+B5ZWmb7AmJwLY1hV/4UcJa/+5HxZgm/1EIw==";

#[test]
fn d5_the_derived_consume_request_signature_is_reproduced_from_our_order() {
    let test = "d5_the_derived_consume_request_signature…";
    let Some(pfx) = sample(SMARTWALLE_PFX, test) else {
        return;
    };
    let identity = SigningIdentity::from_pkcs12(&pfx, "000000").unwrap();
    let mut fields = front_consume("777290058110048", &d5_order()).unwrap();
    identity.sign_request(&mut fields);
    assert_eq!(sign_string(&fields, true), D5_SIGN_STRING);
    assert_eq!(crypto::sha256_hex(D5_SIGN_STRING.as_bytes()), D5_DIGEST);
    assert_eq!(field(&fields, "signature"), Some(D5_SIGNATURE));
}

#[tokio::test]
async fn d5_the_client_hands_the_same_signed_form_to_the_browser() {
    let test = "d5_the_client_hands_the_same_signed_form…";
    let (Some(pfx), Some(root), Some(middle)) =
        (sample(SMARTWALLE_PFX, test), sample(ROOT, test), sample(MIDDLE, test))
    else {
        return;
    };
    let config = UnionPayConfig::new(
        "777290058110048",
        UnionPaySigningKey::Pkcs12 {
            pfx,
            password: "000000".into(),
        },
        root,
        middle,
    )
    .test_environment();
    assert!(
        format!("{config:?}").contains("password: <redacted>"),
        "the password never prints"
    );
    let client = UnionPayClient::new(config).unwrap();
    assert_eq!(client.cert_id(), "69903319369");
    let action = meterpay_gateways::gateway::PaymentGateway::create_order(&client, &d5_order())
        .await
        .unwrap();
    let PayerAction::Form { action, fields } = action else {
        panic!("UnionPay's front consume is a form")
    };
    assert_eq!(action, "https://gateway.test.95516.com/gateway/api/frontTransReq.do");
    assert_eq!(field(&fields, "signature"), Some(D5_SIGNATURE));
    assert_eq!(field(&fields, "certId"), Some("69903319369"));
}
