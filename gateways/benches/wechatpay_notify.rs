//! WeChat Pay: notifications verified per second on one core (target ≥ 10,000/s), the whole
//! path a callback takes — signature over the raw body (RSA-2048), AES-256-GCM decryption of the
//! resource, JSON parsing and mapping — and, for scale, trade-bill rows parsed per second.
//! Run: `cargo bench -p meterpay-gateways --bench wechatpay_notify`.

use std::time::Instant;

use chrono::{TimeZone, Utc};
use meterpay_gateways::gateway::IncomingNotification;
use meterpay_gateways::wechatpay::notify::verify_notification;
use meterpay_gateways::wechatpay::{ApiV3Key, PlatformCertificate, WechatPayKeys};

const CERT: &[u8] = include_bytes!("../../fixtures/sandbox/wechatpay/platform_old_cert.pem");
const APIV3: &[u8] = include_bytes!("../../fixtures/wechatpay/apiv3_key.txt");
const HEADERS: &str = include_str!("../../fixtures/wechatpay/notify_transaction_success.headers.txt");
const BODY: &[u8] = include_bytes!("../../fixtures/wechatpay/notify_transaction_success.body.json");
const BILL: &str = include_str!("../../fixtures/wechatpay/tradebill_ALL.csv");

fn main() {
    let headers: Vec<(String, String)> = HEADERS
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut keys = WechatPayKeys::new();
    keys.add_certificates(PlatformCertificate::parse_all(CERT).unwrap());
    let apiv3 = ApiV3Key::new(APIV3).unwrap();
    let now = Utc.timestamp_opt(1764554410, 0).unwrap();
    let n = IncomingNotification {
        headers: &headers,
        body: BODY,
    };
    verify_notification(&keys, Some(&apiv3), n, now).expect("the fixture verifies");

    for _ in 0..200 {
        verify_notification(&keys, Some(&apiv3), n, now).unwrap();
    }
    let count = 20_000;
    let start = Instant::now();
    for _ in 0..count {
        std::hint::black_box(verify_notification(&keys, Some(&apiv3), std::hint::black_box(n), now).unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "wechatpay notifications verified+decrypted+parsed: {count} in {secs:.3} s = {:.0}/s on one core (target >= 10000/s)",
        count as f64 / secs
    );

    // The parts: the signature alone, then decryption alone.
    let h = meterpay_gateways::wechatpay::verify::SignedHeaders::from_lookup(|k| n.header(k)).unwrap();
    let start = Instant::now();
    for _ in 0..count {
        keys.verify(&h, std::hint::black_box(BODY), now).unwrap();
    }
    let sig_secs = start.elapsed().as_secs_f64();
    let env: meterpay_gateways::wechatpay::transformers::NotificationEnvelope = serde_json::from_slice(BODY).unwrap();
    let r = &env.resource;
    let start = Instant::now();
    for _ in 0..count {
        std::hint::black_box(apiv3.decrypt(&r.nonce, &r.associated_data, &r.ciphertext).unwrap());
    }
    let dec_secs = start.elapsed().as_secs_f64();
    println!(
        "  of which: RSA-2048 signature check {:.1} us each, AES-256-GCM decryption {:.1} us each",
        sig_secs * 1e6 / count as f64,
        dec_secs * 1e6 / count as f64
    );

    // A 200,000-row ALL bill: the fixture's three rows repeated, summary recomputed by the parser's rules.
    let lines: Vec<&str> = BILL.trim_end().split("\r\n").collect();
    let (header, rows) = (lines[0], &lines[1..4]);
    let repeat = 200_000 / rows.len();
    let mut big = String::with_capacity(repeat * 3 * 260);
    big.push_str(header);
    big.push_str("\r\n");
    for _ in 0..repeat {
        for r in rows {
            big.push_str(r);
            big.push_str("\r\n");
        }
    }
    let k = repeat as i64;
    big.push_str(lines[4]);
    big.push_str(&format!(
        "\r\n`{},`{},`{},`0.00,`{},`{},`{}\r\n",
        3 * k,
        yuan(18_880 * k),
        yuan(1000 * k),
        e5(107_280 * k),
        yuan(18_880 * k),
        yuan(1000 * k)
    ));
    let start = Instant::now();
    let f = meterpay_gateways::wechatpay::settlement::parse(big.as_bytes()).expect("the big bill parses");
    let secs = start.elapsed().as_secs_f64();
    println!(
        "wechatpay trade bill: {} rows ({} MB) parsed in {secs:.3} s = {:.0} rows/s",
        f.rows.len(),
        big.len() / 1_000_000,
        f.rows.len() as f64 / secs
    );
}

fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

fn e5(v: i64) -> String {
    format!("{}.{:05}", v / 100_000, v % 100_000)
}
