//! Alipay notifications verified per second on one core (target ≥ 10,000/s): a real-format
//! `trade_status_sync` body (fixtures/alipay/) decoded, verified (RSA2, 2048-bit) and read into
//! our terms, as the client's `verify_notification` does it, on one thread. Prints its figures;
//! asserts nothing. `BENCH_NOTIFICATIONS` changes the count.

use std::time::Instant;

use chrono::Utc;
use meterpay_gateways::alipay::{AlipayClient, AlipayConfig};
use meterpay_gateways::gateway::{IncomingNotification, PaymentGateway};

const BODY: &[u8] = include_bytes!("../../fixtures/alipay/notify_trade_success_utf8.txt");
const GBK_BODY: &[u8] = include_bytes!("../../fixtures/alipay/notify_trade_success_gbk.txt");
const PLATFORM_KEY: &[u8] = include_bytes!("../../fixtures/sandbox/alipay/alipay_public_key.txt");
const APP_KEY: &[u8] = include_bytes!("../../fixtures/alipay/app_private_key_pkcs8.txt");

fn main() {
    let n: usize = std::env::var("BENCH_NOTIFICATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let client =
        AlipayClient::new(AlipayConfig::public_key_mode("2021000000000001", APP_KEY, PLATFORM_KEY).unwrap()).unwrap();
    for (label, body) in [("utf-8", BODY), ("GBK", GBK_BODY)] {
        // Warm up.
        for _ in 0..200 {
            client
                .verify_notification(IncomingNotification { headers: &[], body }, Utc::now())
                .unwrap();
        }
        let started = Instant::now();
        let cpu0 = cpu_seconds();
        for _ in 0..n {
            let v = client.verify_notification(IncomingNotification { headers: &[], body }, Utc::now());
            assert!(v.is_ok());
        }
        let secs = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds().zip(cpu0).map(|(b, a)| b - a);
        println!(
            "alipay notify verify ({label}, {} bytes): {n} in {secs:.3} s wall = {:.0}/s; {} (target >= 10000/s on one core)",
            body.len(),
            n as f64 / secs,
            cpu.map_or("cpu time unknown".into(), |c| format!("{c:.2} s cpu = {:.0}/s per core", n as f64 / c)),
        );
    }
}

/// CPU seconds this process has used (user + system, from /proc/self/stat; Linux), so that the
/// figure holds on a machine other builds keep busy. `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}
