//! WeChat Pay v3: the published test vectors (W1–W7) and our derived ones (D2–D4) from
//! shared/spec/test-vectors.md, and the sample notifications and trade bills in
//! `../shared/samples/`. Keys and samples are read from `../shared` (relative to the worktree
//! root); the expected values are written here. When `../shared` is absent each test prints a
//! loud `!!! SKIPPED` line instead (CI always has it).

use std::path::PathBuf;

use chrono::{DateTime, TimeZone, Utc};
use meterpay_gateways::crypto::{load_private_key, load_public_key};
use meterpay_gateways::gateway::{IncomingNotification, NotificationEvent, NotifyError, PaymentGateway};
use meterpay_gateways::outcome::PaymentState;
use meterpay_gateways::settlement::RowKind;
use meterpay_gateways::wechatpay::notify::open;
use meterpay_gateways::wechatpay::settlement::{parse_with_type, BillType};
use meterpay_gateways::wechatpay::sign::{jsapi_params, Authorization};
use meterpay_gateways::wechatpay::{
    inspect_notification, merchant_serial_from_certificate, ApiV3Key, PlatformCertificate, WechatPayClient,
    WechatPayConfig, WechatPayKeys,
};

fn shared() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let s = root.join("../shared");
    s.join("samples").is_dir().then_some(s)
}

/// Read a file under `../shared/samples/`, or print the loud skip line and return None.
fn sample(test: &str, rel: &str) -> Option<Vec<u8>> {
    match shared() {
        Some(s) => Some(std::fs::read(s.join("samples").join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))),
        None => {
            eprintln!("!!! SKIPPED {test}: ../shared/samples/{rel} is not present");
            None
        }
    }
}

fn headers(text: &[u8]) -> Vec<(String, String)> {
    std::str::from_utf8(text)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn at(ts: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(ts, 0).unwrap()
}

const W1_SIGNATURE: &str = "BKyAfU4iMCuvXMXS0Wzam3V/cnxZ+JaqigPM5OhljS2iOT95OO6Fsuml2JkFANJU9K6q9bLlDhPXuoVz+pp4hAm6pHU4ld815U4jsKu1RkyaII+1CYBUYC8TK0XtJ8FwUXXz8vZHh58rrAVN1XwNyvD1vfpxrMT4SL536GLwvpUHlCqIMzoZUguLli/K8V29QiOhuH6IEqLNJn8e9b3nwNcQ7be3CzYGpDAKBfDGPCqCv8Rw5zndhlffk2FEA70G4hvMwe51qMN/RAJbknXG23bSlObuTCN7Ndj1aJGH6/L+hdwfLpUtJm4QYVazzW7DFD27EpSQEqA8bX9+8m1rLg==";

#[test]
fn vector_w1_sha256_with_rsa_of_source_matches_the_published_signature() {
    let Some(pem) = sample("w1", "vectors/wechatpay/wechatpay-go_utils_test_key_pkcs8.pem") else {
        return;
    };
    let key = load_private_key(&pem).unwrap();
    assert_eq!(key.sign_sha256_base64(b"source"), W1_SIGNATURE);
    // The same key is inside W3's platform certificate.
    let Some(cert) = sample("w1", "vectors/wechatpay/wechatpay-go_notify_test_platform_cert.pem") else {
        return;
    };
    assert_eq!(load_public_key(&cert).unwrap(), key.public_key());
}

const W3_PLAINTEXT: &str = r#"{"mchid":"1234567890","appid":"054aa7d7a2a54ab5898df65bd96f001c","create_time":"2020-06-30T12:12:00+08:00","out_contract_code":"21640bdbd08e473e828f3206a2741c6e"}"#;

#[test]
fn vector_w3_the_payscore_notification_verifies_and_decrypts_at_its_pinned_time() {
    let (Some(body), Some(hdrs), Some(cert)) = (
        sample("w3", "wechatpay/notify_payscore_wechatpay-go.body.json"),
        sample("w3", "wechatpay/notify_payscore_wechatpay-go.headers.txt"),
        sample("w3", "vectors/wechatpay/wechatpay-go_notify_test_platform_cert.pem"),
    ) else {
        return;
    };
    assert_eq!(body.len(), 568);
    let h = headers(&hdrs);
    let n = IncomingNotification {
        headers: &h,
        body: &body,
    };
    let certs = PlatformCertificate::parse_all(&cert).unwrap();
    assert_eq!(certs[0].serial_no, "D7CE59D1F522D701", "no DER sign byte in the serial");
    let mut keys = WechatPayKeys::new();
    keys.add_certificates(certs);
    let key = ApiV3Key::new_allowing_test_length(b"testMchAPIv3Key0").unwrap();
    let opened = open(&keys, Some(&key), n, at(1624523846)).unwrap();
    assert_eq!(opened.plaintext, W3_PLAINTEXT);
    assert_eq!(opened.envelope.event_type, "PAYSCORE.USER_OPEN_SERVICE");
    assert_eq!(opened.envelope.id, "3119dfba-e649-5eec-ab1e-3412bc4d2e17");

    // Through the operator tool's entry point: verified, but not an event meterpay acts on.
    let e = inspect_notification(&cert, Some(b"testMchAPIv3Key0"), n, at(1624523846)).unwrap_err();
    assert!(
        matches!(&e, NotifyError::Malformed(m) if m.contains("verified and decrypted")),
        "{e}"
    );
    // With a real clock the five-minute window refuses it.
    assert!(matches!(
        inspect_notification(&cert, Some(b"testMchAPIv3Key0"), n, Utc::now()),
        Err(NotifyError::StaleTimestamp {
            timestamp: 1624523846,
            window_secs: 300
        })
    ));
    // 299 s late is inside the window, 300 s is not.
    assert!(open(&keys, Some(&key), n, at(1624523846 + 299)).is_ok());
    assert!(open(&keys, Some(&key), n, at(1624523846 - 300)).is_err());
    // Another APIv3 key verifies the signature but cannot decrypt.
    let wrong = ApiV3Key::new_allowing_test_length(b"testMchAPIv3Key1").unwrap();
    assert!(matches!(
        open(&keys, Some(&wrong), n, at(1624523846)),
        Err(NotifyError::Decrypt(_))
    ));
}

#[test]
fn the_wechatpay_java_resource_sample_holds_the_same_ciphertext_as_w3() {
    let Some(json) = sample("w3-java", "wechatpay/notify_resource_only_wechatpay-java.json") else {
        return;
    };
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let r = &v["resource"];
    let key = ApiV3Key::new_allowing_test_length(b"testMchAPIv3Key0").unwrap();
    let pt = key
        .decrypt_to_string(
            r["nonce"].as_str().unwrap(),
            r["associated_data"].as_str().unwrap(),
            r["ciphertext"].as_str().unwrap(),
        )
        .unwrap();
    assert_eq!(pt, W3_PLAINTEXT);
}

const W4_KEY: &[u8] = b"a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";

#[test]
fn vector_w5_the_certificate_download_decrypts_to_the_tenpay_certificate() {
    let (Some(json), Some(expected)) = (
        sample("w5", "vectors/wechatpay/wechatpay-java_certificates_response.json"),
        sample(
            "w5",
            "vectors/wechatpay/wechatpay-java_certificates_response_decrypted.pem",
        ),
    ) else {
        return;
    };
    let list: meterpay_gateways::wechatpay::transformers::CertificatesAnswer = serde_json::from_slice(&json).unwrap();
    assert_eq!(list.data.len(), 1);
    let item = &list.data[0];
    let e = &item.encrypt_certificate;
    assert_eq!(
        (e.nonce.as_str(), e.associated_data.as_str()),
        ("14b16c03dc1b", "certificate")
    );
    let pem = ApiV3Key::new(W4_KEY)
        .unwrap()
        .decrypt_to_string(&e.nonce, &e.associated_data, &e.ciphertext)
        .unwrap();
    assert_eq!(pem.trim(), String::from_utf8(expected).unwrap().trim());
    let cert = PlatformCertificate::parse_all(pem.as_bytes()).unwrap().remove(0);
    assert_eq!(cert.serial_no, "5DEA10EF55877E3CF6C33255C2E7DEFFF7E427EC");
    assert_eq!(cert.serial_no, item.serial_no);
    assert_eq!(
        cert.not_before,
        "2023-09-19T15:15:58Z".parse::<DateTime<Utc>>().unwrap()
    );
    assert_eq!(cert.not_after, "2028-09-17T15:15:58Z".parse::<DateTime<Utc>>().unwrap());
    assert_eq!(
        cert.not_before,
        DateTime::parse_from_rfc3339(&item.effective_time).unwrap(),
        "effective_time names the certificate's notBefore"
    );
}

#[test]
fn vector_w7_the_test_key_material_has_the_published_serials_and_matching_keys() {
    let (Some(mcert), Some(wcert), Some(wpub), Some(wkey)) = (
        sample("w7", "vectors/wechatpay/wechatpay-java_merchant_certificate.pem"),
        sample("w7", "vectors/wechatpay/wechatpay-java_wechat_pay_certificate.pem"),
        sample("w7", "vectors/wechatpay/wechatpay-java_wechat_pay_public_key.pem"),
        sample("w7", "vectors/wechatpay/wechatpay-java_wechat_pay_private_key.pem"),
    ) else {
        return;
    };
    assert_eq!(
        merchant_serial_from_certificate(&mcert).unwrap(),
        "5F1C72E2A8931B72A2E13AF8DEE92471EB397115"
    );
    let w = PlatformCertificate::parse_all(&wcert).unwrap().remove(0);
    assert_eq!(w.serial_no, "440024045C4A427599D09BB4E3DE0279F2E813FD");
    assert_eq!(load_public_key(&wpub).unwrap(), w.key);
    assert_eq!(load_private_key(&wkey).unwrap().public_key(), w.key);
}

const D2_TS: i64 = 1700000000;
const D2_NONCE: &str = "593BEC0C930BF1AFEB40B4A08C8FB242";
const D2_SERIAL: &str = "5F1C72E2A8931B72A2E13AF8DEE92471EB397115";
const D2_GET_SIG: &str = "YI1IvBgGXzOwCxCLizXClJOZlupkktXjumHtYe89GdBzU280+zM8tAMcCuTPZgLLdTaKpLS2uW7tMtjZMGrAV32HxtSigX6UTB8jEeT8T058NVMh8PEyWN6v+GI5f2Ksmt5jhTaXDKT2i5FVEV9Tl2pO3h2cAgETcWugFnYZA/CGgehscf5hPXEqgBnMMX3n0LfLK8gn447sXmPhbDrQkvdeAZTPu3Ihid0vyPJ3zXQ08qjXJLtLzx0oVtOIF0vet95RQ08fovaaoWKWSLpqXV7C82ZLQ7YURyz+0OA3D/R9dFPgk4pVuwx3xFQfnVX46uBt88dWRS7j0DY9LPAT5g==";
const D2_NATIVE_SIG: &str = "V8fmdpemNeHIOl1slOoCV4AMJchCFzsryITaNfya5wm5NcvVnb/k4I9acDUz1hQ3PwEsdnSqBjnPNUcl7EyzIU4gl18hSgl2w0pVhtHxMRWcJiv8LWl1tRC6wq8dyZgdvrVIk/xDY+PL4u6V/MAnhcm74wcfEMlDjBPjw+4NgqyRPwrAa7XSBulHngAjVCtzPBqSfa6GjOqHHYWvkBuWGMbgPqee/WTgoOlMFhPGPV/Fo1TWFcYfq8sp4dxy/XjvjLJhnwetc43J4gluQTr839BZ6DOiC6XUNAC1d3mZAyyjb62mm3547f11ib/pY65SHVmXPNNQ7rzeS5IwaSFgHQ==";
const D2_CLOSE_SIG: &str = "Vj4ZgilGKbaDPVjfT6kZpj4XsBI1l6jmeArpuMexLCJ7VRZ6XukMaAsWpf8j66FapqrtbAd5DPJjV0tXBt4WgqAcGFEBaq/Y4SFJE4jnAoyHpf6rtWONq3qKTMFrSqunCGxyHkAaySkzTlTrA6xd3AJ5q2HT9EGyOVHJXbS8PNJpUxyN0EU9RP86fJ6jmCJGWLPMqvIeqeCurRko6LJTh1SRgtEQ0kD2SUcsQ2bdx6JeBzg/MLQu+KkhiifnYgyLTn4Ym7b8+tasrfK5+0Hx73Nm25ZyZrdXLKUOB8jWVRaoTTLKSp3QHetLi/HIGcBO5JgfP9fLBVttd5eXho+oQg==";
const D2_NATIVE_BODY: &str = r#"{"appid":"wxd678efh567hg6787","mchid":"1234567891","description":"水费2024-01 3栋1201","out_trade_no":"WE20240115000001","notify_url":"https://example.com/pay/wechat/notify","amount":{"total":8880,"currency":"CNY"}}"#;

#[test]
fn vector_d2_request_signatures_and_the_authorization_header_match() {
    let Some(pem) = sample("d2", "vectors/wechatpay/wechatpay-java_merchant_private_key.pem") else {
        return;
    };
    let key = load_private_key(&pem).unwrap();
    let sign = |method: &str, url: &str, body: &str| {
        Authorization::sign(
            &key,
            "1234567891",
            D2_SERIAL,
            method,
            url,
            D2_TS,
            D2_NONCE,
            body.as_bytes(),
        )
    };
    let get = sign(
        "GET",
        "/v3/pay/transactions/out-trade-no/WE20240115000001?mchid=1234567891",
        "",
    );
    assert_eq!(get.signature, D2_GET_SIG);
    assert_eq!(
        get.header_value(),
        format!(
            "WECHATPAY2-SHA256-RSA2048 mchid=\"1234567891\",nonce_str=\"{D2_NONCE}\",signature=\"{D2_GET_SIG}\",timestamp=\"1700000000\",serial_no=\"{D2_SERIAL}\""
        )
    );
    assert_eq!(
        sign("POST", "/v3/pay/transactions/native", D2_NATIVE_BODY).signature,
        D2_NATIVE_SIG
    );
    assert_eq!(
        sign(
            "POST",
            "/v3/pay/transactions/out-trade-no/WE20240115000001/close",
            r#"{"mchid":"1234567891"}"#
        )
        .signature,
        D2_CLOSE_SIG
    );
    // Our own serialisation of the Native order produces exactly D2's body.
    let body = meterpay_gateways::wechatpay::transformers::OrderRequest {
        appid: "wxd678efh567hg6787".into(),
        mchid: "1234567891".into(),
        description: "水费2024-01 3栋1201".into(),
        out_trade_no: "WE20240115000001".into(),
        time_expire: None,
        attach: None,
        notify_url: "https://example.com/pay/wechat/notify".into(),
        amount: meterpay_gateways::wechatpay::transformers::Amount {
            total: 8880,
            currency: "CNY".into(),
        },
        payer: None,
        scene_info: None,
    };
    assert_eq!(serde_json::to_string(&body).unwrap(), D2_NATIVE_BODY);
}

const D3_PAYSIGN: &str = "SkYuwMwf0Zd5fJbZLftSccdjoNeI0ldvhlVk5RkJYzLo1vKv36XuM8tEWCpIjPPNgJhRsn7uO1TlVSz9wC4zXxTzf0Yk/qYwSzpH6F5pmWNXld7UG00AGBojmLvi5K1DkK4OAfhJ9Cq8vmlp+O/bnKcZZCiMnUE4ngDxBwIaagotdEPbePECEVnlkR7FYajt77nvGX4rOWUd2ukimNRiSqKR9z/mlLpy08N0QjMxIKuWCKg2nbZXjRjkxtKIRejYHDBEe0bP3gWw8QLDSDk4VWvyj+Bo2w1GuDmdOjyHnr1v1dtB/Lc0l0GfbV7+MAm1prg8+2ostcctZ6RcXA01PQ==";

#[test]
fn vector_d3_the_jsapi_pay_sign_matches() {
    let Some(pem) = sample("d3", "vectors/wechatpay/wechatpay-java_merchant_private_key.pem") else {
        return;
    };
    let key = load_private_key(&pem).unwrap();
    let params = jsapi_params(
        &key,
        "wxd678efh567hg6787",
        "wx201410272009395522657a690389285100",
        D2_TS,
        D2_NONCE,
    );
    let names: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["appId", "timeStamp", "nonceStr", "package", "signType", "paySign"]
    );
    assert_eq!(params[3].1, "prepay_id=wx201410272009395522657a690389285100");
    assert_eq!(params[4].1, "RSA");
    assert_eq!(params[5].1, D3_PAYSIGN);
}

const D4_TS: i64 = 1705285266;

/// body, headers, platform certificate, public key, merchant key.
type D4 = (Vec<u8>, Vec<(String, String)>, Vec<u8>, Vec<u8>, Vec<u8>);

fn d4() -> Option<D4> {
    Some((
        sample("d4", "wechatpay/notify_transaction_success_SYNTHETIC.body.json")?,
        headers(&sample(
            "d4",
            "wechatpay/notify_transaction_success_SYNTHETIC.headers.txt",
        )?),
        sample("d4", "vectors/wechatpay/wechatpay-java_wechat_pay_certificate.pem")?,
        sample("d4", "vectors/wechatpay/wechatpay-java_wechat_pay_public_key.pem")?,
        sample("d4", "vectors/wechatpay/wechatpay-java_merchant_private_key.pem")?,
    ))
}

fn assert_d4_payment(v: &meterpay_gateways::gateway::VerifiedNotification) {
    assert_eq!(
        v.event,
        NotificationEvent::Payment {
            order_no: "WE20240115000001".into(),
            state: PaymentState::Paid,
            gateway_txn_id: "4200002024011512345678901234".into(),
            amount_fen: 8880,
            paid_at: Some("2024-01-15T02:21:05Z".parse().unwrap()),
        }
    );
    assert_eq!(v.merchant_id, "1234567891");
    assert_eq!(v.event_id, "EV-2024011510210500001");
    assert_eq!(v.fields["resource"]["payer"]["openid"], "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
}

#[test]
fn vector_d4_the_synthetic_payment_verifies_with_the_platform_certificate() {
    let Some((body, h, cert, _, _)) = d4() else { return };
    let n = IncomingNotification {
        headers: &h,
        body: &body,
    };
    let v = inspect_notification(&cert, Some(W4_KEY), n, at(D4_TS)).unwrap();
    assert_d4_payment(&v);
    let Some(plain) = sample("d4", "wechatpay/notify_transaction_success_SYNTHETIC.plaintext.json") else {
        return;
    };
    let expected: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(v.fields["resource"], expected);
}

#[test]
fn vector_d4_verifies_in_public_key_mode_through_a_configured_client() {
    let Some((body, h, _, pubkey, merchant_key)) = d4() else {
        return;
    };
    let id = "PUB_KEY_ID_0112345678202401150000000001";
    let h: Vec<(String, String)> = h
        .into_iter()
        .map(|(k, v)| {
            if k.eq_ignore_ascii_case("Wechatpay-Serial") {
                (k, id.to_string())
            } else {
                (k, v)
            }
        })
        .collect();
    let cfg = WechatPayConfig::new("1234567891", "wxd678efh567hg6787", D2_SERIAL, &merchant_key, W4_KEY)
        .unwrap()
        .with_public_key(id, &pubkey)
        .unwrap();
    let client = WechatPayClient::new(cfg).unwrap();
    let n = IncomingNotification {
        headers: &h,
        body: &body,
    };
    assert_d4_payment(&client.verify_notification(n, at(D4_TS)).unwrap());
    // Another public-key id is not ours, and downloading certificates would not help.
    let other: Vec<(String, String)> = h
        .iter()
        .map(|(k, v)| {
            if k.eq_ignore_ascii_case("Wechatpay-Serial") {
                (k.clone(), "PUB_KEY_ID_09".into())
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    let e = client
        .verify_notification(
            IncomingNotification {
                headers: &other,
                body: &body,
            },
            at(D4_TS),
        )
        .unwrap_err();
    assert!(matches!(&e, NotifyError::UnknownKey(m) if m.contains(id)), "{e}");
    // A bare public key given to the operator tool is tried whatever the serial.
    assert_d4_payment(&inspect_notification(&pubkey, Some(W4_KEY), n, at(D4_TS)).unwrap());
}

#[test]
fn vector_d4_its_platform_certificate_is_trusted_inside_its_validity_and_unusable_after() {
    let Some((body, h, cert, _, _)) = d4() else { return };
    let n = IncomingNotification {
        headers: &h,
        body: &body,
    };
    // Pin a clock after the certificate's notAfter (2025-05-09) with a matching timestamp.
    let mut keys = WechatPayKeys::new();
    keys.add_certificates(PlatformCertificate::parse_all(&cert).unwrap());
    let later = "2025-06-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
    let choice = keys.key_for("440024045C4A427599D09BB4E3DE0279F2E813FD", later);
    assert!(
        matches!(choice, meterpay_gateways::wechatpay::verify::KeyChoice::Unusable(_)),
        "{choice:?}"
    );
    assert!(keys
        .verify(
            &meterpay_gateways::wechatpay::verify::SignedHeaders::from_lookup(|k| n.header(k)).unwrap(),
            &body,
            at(D4_TS)
        )
        .is_ok());
}

#[test]
fn the_sample_trade_bills_parse_in_all_three_layouts() {
    let Some(all) = sample("bills", "wechatpay/tradebill_ALL_wechatpay-php.csv") else {
        return;
    };
    let (f, t) = parse_with_type(&all).unwrap();
    assert_eq!(t, BillType::All);
    assert_eq!(f.rows.len(), 45);
    assert_eq!((f.totals.payment_count, f.totals.refund_count), (31, 14));
    assert_eq!((f.totals.payment_fen, f.totals.refund_fen), (47, 14));
    assert_eq!(
        f.totals.fee_fen, 8,
        "eight payments with a 0.01000 fee, every one a whole fen"
    );
    let refund = f.rows.iter().find(|r| r.kind == RowKind::Refund).unwrap();
    assert_eq!(refund.refund_no.as_deref(), Some("REF4200000263201902167700963919"));
    assert_eq!(refund.gateway_txn_id, "4200000263201902167700134212");
    assert_eq!(refund.fee, "0.00000");
    assert!(f.rows.iter().all(|r| r.amount_fen > 0));
    assert!(f.rows.iter().all(|r| !r.original_line.ends_with('\r')));

    let Some(success) = sample("bills", "wechatpay/tradebill_SUCCESS_reconstructed.csv") else {
        return;
    };
    let (f, t) = parse_with_type(&success).unwrap();
    assert_eq!(t, BillType::Success);
    assert_eq!(f.rows.len(), 1);
    assert_eq!(f.rows[0].order_no, "S20210201143829466741");
    assert_eq!((f.rows[0].amount_fen, f.rows[0].fee_fen), (1, Some(0)));
    assert_eq!(f.rows[0].time.to_string(), "2021-02-01 14:38:45");

    let Some(refunds) = sample("bills", "wechatpay/tradebill_REFUND_reconstructed.csv") else {
        return;
    };
    let (f, t) = parse_with_type(&refunds).unwrap();
    assert_eq!(t, BillType::Refund);
    assert_eq!(f.rows.len(), 2);
    assert!(f.rows.iter().all(|r| r.kind == RowKind::Refund && r.amount_fen == 1));
    assert_eq!(f.rows[0].refund_no.as_deref(), Some("S20210201143320649393"));
    assert_eq!(
        f.rows[0].time.to_string(),
        "2021-02-01 14:33:21",
        "a REFUND bill's refund row is dated by its 退款申请时间, not the payment's 交易时间"
    );
}

#[test]
fn a_tampered_sample_bill_is_refused_by_its_summary() {
    let Some(all) = sample("bills-tamper", "wechatpay/tradebill_ALL_wechatpay-php.csv") else {
        return;
    };
    let text = String::from_utf8(all).unwrap();
    let changed = text.replacen("`0.03,`0.00,`0,`0,", "`0.04,`0.00,`0,`0,", 1);
    assert_ne!(changed, text);
    assert!(matches!(
        meterpay_gateways::wechatpay::settlement::parse(changed.as_bytes()),
        Err(meterpay_gateways::settlement::SettlementError::SummaryMismatch(_))
    ));
}
