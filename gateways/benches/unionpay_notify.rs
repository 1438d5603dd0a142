//! UnionPay back notifications verified per second on one core (target ≥ 10,000/s), and the
//! ZM parser's speed. Run: `cargo bench -p meterpay-gateways --bench unionpay_notify`.
//!
//! The notifications are signed like the sandbox signs them (its fixture certificate, chained
//! to its root and middle); verification is the full path the service takes for each one:
//! form decoding, the signer certificate check (cached after the first), sort, SHA-256 and one
//! RSA-2048 verification, then the mapping to a payment event.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::Utc;
use meterpay_gateways::gateway::IncomingNotification;
use meterpay_gateways::unionpay::settlement::ZM_WIDTHS;
use meterpay_gateways::unionpay::transformers::write_form;
use meterpay_gateways::unionpay::{SigningIdentity, TrustStore, UnionPayClient, UnionPayEnvironment};

const ROOT: &[u8] = include_bytes!("../../fixtures/sandbox/unionpay/root.pem");
const MIDDLE: &[u8] = include_bytes!("../../fixtures/sandbox/unionpay/middle.pem");
const SIGN_PEM: &[u8] = include_bytes!("../../fixtures/sandbox/unionpay/sign.pem");
const SIGN_KEY: &[u8] = include_bytes!("../../fixtures/sandbox/unionpay/sign.key");

fn notification(signer: &SigningIdentity, i: usize) -> Vec<u8> {
    let order = format!("W2026120100{i:06}");
    let query_id = format!("261201103000{i:09}");
    let mut f: Vec<(String, String)> = [
        ("version", "5.1.0"),
        ("encoding", "UTF-8"),
        ("signMethod", "01"),
        ("txnType", "01"),
        ("txnSubType", "01"),
        ("bizType", "000201"),
        ("accessType", "0"),
        ("merId", "777290058110048"),
        ("orderId", order.as_str()),
        ("txnTime", "20261201103000"),
        ("txnAmt", "8880"),
        ("currencyCode", "156"),
        ("queryId", query_id.as_str()),
        ("respCode", "00"),
        ("respMsg", "成功[0000000]"),
        ("accNo", "6216***********0018"),
        ("payCardType", "01"),
        ("payType", "0001"),
        ("traceNo", "000001"),
        ("traceTime", "1201103005"),
        ("settleDate", "1201"),
        ("settleAmt", "8880"),
        ("settleCurrencyCode", "156"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    f.push(("signPubKeyCert".into(), signer.certificate_pem()));
    let sig = signer.signature(&f, false);
    f.push(("signature".into(), sig));
    write_form(&f).into_bytes()
}

/// Calls per second of `f` over about a second.
fn rate(mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let signer = SigningIdentity::from_pem(SIGN_KEY, SIGN_PEM).expect("the sandbox signing fixture");
    let trust = TrustStore::new(ROOT, MIDDLE, UnionPayEnvironment::Test).expect("the sandbox trust anchors");
    let bodies: Vec<Vec<u8>> = (0..256).map(|i| notification(&signer, i)).collect();
    let now = Utc::now();
    let verify = |body: &[u8]| {
        UnionPayClient::verify_with(&trust, IncomingNotification { headers: &[], body }, now)
            .expect("a good notification verifies")
    };

    // First sight of the signing certificate: chain, validity, CN (not cached yet).
    let cold = {
        let fresh = TrustStore::new(ROOT, MIDDLE, UnionPayEnvironment::Test).unwrap();
        let t = Instant::now();
        UnionPayClient::verify_with(
            &fresh,
            IncomingNotification {
                headers: &[],
                body: &bodies[0],
            },
            now,
        )
        .unwrap();
        t.elapsed()
    };

    for b in bodies.iter().take(64) {
        black_box(verify(b)); // warm up
    }
    let mut n = 0usize;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        black_box(verify(&bodies[n % bodies.len()]));
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "unionpay notify: {:.0} notifications verified per second on one core ({n} in {secs:.2} s; target >= 10000); \
         {:.1} us each; first sight of a signing certificate {:.2} ms",
        n as f64 / secs,
        secs * 1e6 / n as f64,
        cold.as_secs_f64() * 1e3
    );

    // Where the time goes: the RSA verification alone, and the rest of the path.
    let fields = meterpay_gateways::unionpay::transformers::parse_form(&bodies[0]).unwrap();
    let key = signer.public_key();
    let digest = meterpay_gateways::crypto::sha256_hex(
        meterpay_gateways::unionpay::sign::sign_string(&fields, false).as_bytes(),
    );
    let sig = meterpay_gateways::unionpay::transformers::field(&fields, "signature")
        .unwrap()
        .to_string();
    let rsa_per_s = rate(|| {
        key.verify_sha256_base64(digest.as_bytes(), &sig).unwrap();
    });
    let rest_per_s = rate(|| {
        let f = meterpay_gateways::unionpay::transformers::parse_form(black_box(&bodies[1])).unwrap();
        black_box(meterpay_gateways::crypto::sha256_hex(
            meterpay_gateways::unionpay::sign::sign_string(&f, false).as_bytes(),
        ));
        black_box(meterpay_gateways::unionpay::transformers::notification_event(&f).unwrap());
        black_box(meterpay_gateways::unionpay::transformers::fields_json(&f));
    });
    println!(
        "unionpay notify: of which one RSA-2048 verification alone runs at {rsa_per_s:.0}/s; \
         everything else (form decoding, sign string, SHA-256, mapping) at {rest_per_s:.0}/s"
    );

    // The ZM parser over a large day (the file as its text, already inflated).
    let rows = 200_000usize;
    let mut text = String::with_capacity(rows * 610);
    for i in 0..rows {
        let mut v: Vec<String> = vec![String::new(); 41];
        v[0] = "S22".into();
        v[3] = format!("{:06}", i % 1_000_000);
        v[4] = "1201103005".into();
        v[6] = format!("{:012}", 1000 + i);
        v[9] = format!("261201103000{i:09}");
        v[11] = format!("W2026120100{i:06}");
        v[15] = "D000000000006".into();
        v[16] = format!("C{:012}", 1000 + i);
        v[19] = "01".into();
        v[27] = "777290058110048".into();
        v[32] = format!("C{:012}", 994 + i);
        let line: Vec<String> = v.iter().zip(ZM_WIDTHS).map(|(s, w)| format!("{s:<w$}")).collect();
        text.push_str(&line.join(" "));
        text.push_str("\r\n");
    }
    let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
    let t = Instant::now();
    let recs = meterpay_gateways::unionpay::settlement::parse_zm(&text, day, "777290058110048").unwrap();
    let rows_out = meterpay_gateways::unionpay::settlement::normalise(&recs);
    let el = t.elapsed().as_secs_f64();
    assert_eq!(rows_out.len(), rows);
    println!(
        "unionpay settlement: {rows} ZM lines parsed and normalised in {el:.2} s ({:.0} lines/s)",
        rows as f64 / el
    );
}
