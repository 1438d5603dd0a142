//! Alipay's bill: a 1,000,000-row detail file parsed (target ≤ 2 s). The bill is written first
//! in the real format (GBK detail + summary in a zip, footer totals, fees), then `parse` is
//! timed over the zip bytes: unzip, GBK decoding, CSV, normalisation, footer and summary checks.
//! Prints its figures; asserts nothing. `BENCH_BILL_ROWS` changes the size.

use std::time::Instant;

use chrono::{Duration, NaiveDate};
use meterpay_gateways::alipay::settlement::{parse, write_zip, BillRow};
use meterpay_gateways::settlement::RowKind;

fn main() {
    let n: usize = std::env::var("BENCH_BILL_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let day = NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
    let start = day.and_hms_opt(0, 0, 0).unwrap();
    let rows: Vec<BillRow> = (0..n)
        .map(|i| {
            let refund = i % 20 == 19;
            let s = if refund { -1 } else { 1 };
            let amount = 1_000 + (i as i64 * 7_919) % 50_000;
            let trade = i - (i % 20 == 19) as usize;
            BillRow {
                trade_no: format!("20240115220014{:014}", trade),
                out_trade_no: format!("W20240115{:012}", trade),
                kind: if refund { RowKind::Refund } else { RowKind::Payment },
                subject: format!("水电费2024-01 {}栋{}", i % 30 + 1, 1000 + i % 900),
                created: start + Duration::seconds((trade % 86_000) as i64),
                finished: start + Duration::seconds((i % 86_000) as i64 + 10),
                store_id: "MP001".into(),
                store_name: "3栋收费点".into(),
                operator: "meterpay".into(),
                terminal: String::new(),
                buyer: "*李明(138****1201)".into(),
                order_amount_fen: s * amount,
                received_fen: s * amount,
                merchant_discount_fen: 0,
                refund_no: refund.then(|| format!("RF20240115{:012}", i)),
                fee_fen: s * ((amount * 6 + 500) / 1000),
                remark: format!("户号{}", 10_000 + i % 5000),
            }
        })
        .collect();
    let zip = write_zip("20880000000012340156", day, &rows, start + Duration::hours(30));
    drop(rows);
    println!("alipay bill: {n} detail rows, zip {:.1} MB", zip.len() as f64 / 1e6);
    for run in 1..=3 {
        let started = Instant::now();
        let cpu0 = cpu_seconds();
        let file = parse(&zip).expect("the written bill parses");
        let secs = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds().zip(cpu0).map(|(b, a)| b - a);
        println!(
            "alipay bill parse run {run}: {} rows in {secs:.3} s wall ({:.0} rows/s); {} (target: 1,000,000 rows <= 2 s)",
            file.rows.len(),
            file.rows.len() as f64 / secs,
            cpu.map_or("cpu time unknown".into(), |c| format!("{c:.2} s cpu")),
        );
        drop(file);
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
