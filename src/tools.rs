//! Operator tools for disputed callbacks and files (`meterpay notify verify`,
//! `meterpay settlement parse`) and the standalone gateway sandbox (`meterpay sandbox`). The
//! gateway work is in `meterpay_gateways::tools`; this module reads the files and shapes output.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use meterpay_gateways::gateway::Channel;
use meterpay_gateways::sandbox::{Sandbox, SandboxConfig};
use meterpay_gateways::settlement::SettlementFile;

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} file {}", path.display()))
}

/// What `notify verify` was given.
#[derive(Debug, Clone)]
pub struct NotifyVerifyArgs {
    pub channel: Channel,
    pub gateway_keys: Vec<PathBuf>,
    pub apiv3_key: Option<PathBuf>,
    pub headers: Option<PathBuf>,
    pub body: PathBuf,
    /// Verify as of this time (a captured notification is checked against the time it was sent:
    /// WeChat's timestamp window, UnionPay's certificate validity).
    pub at: Option<DateTime<Utc>>,
}

/// Verify a captured notification: the verified, parsed fields as pretty JSON, or exactly why it
/// does not verify.
pub fn notify_verify(args: &NotifyVerifyArgs) -> anyhow::Result<String> {
    if args.gateway_keys.is_empty() {
        anyhow::bail!("give the gateway's key or certificate with --gateway-key FILE");
    }
    let keys: Vec<Vec<u8>> = args
        .gateway_keys
        .iter()
        .map(|p| read(p, "gateway key"))
        .collect::<Result<_, _>>()?;
    let key = meterpay_gateways::tools::join_key_files(&keys);
    let apiv3 = match &args.apiv3_key {
        Some(p) => {
            let mut k = read(p, "APIv3 key")?;
            while k.last().is_some_and(|b| b.is_ascii_whitespace()) {
                k.pop();
            }
            Some(k)
        }
        None => None,
    };
    if args.channel == Channel::Wechatpay && apiv3.is_none() {
        anyhow::bail!("a WeChat Pay notification's resource is encrypted: give the APIv3 key with --apiv3-key FILE");
    }
    let headers = match &args.headers {
        Some(p) => {
            let text = String::from_utf8(read(p, "headers")?).context("the headers file is not UTF-8")?;
            meterpay_gateways::tools::parse_header_lines(&text).map_err(anyhow::Error::msg)?
        }
        None => Vec::new(),
    };
    let body = read(&args.body, "body")?;
    let at = args.at.unwrap_or_else(Utc::now);
    let verified =
        meterpay_gateways::tools::inspect_notification(args.channel, &key, apiv3.as_deref(), &headers, &body, at)
            .map_err(|e| anyhow::anyhow!("the {} notification does not verify: {e}", args.channel))?;
    Ok(serde_json::to_string_pretty(&verified)?)
}

/// Parse a settlement file.
pub fn settlement_parse(channel: Channel, file: &Path) -> anyhow::Result<SettlementFile> {
    let bytes = read(file, "settlement")?;
    meterpay_gateways::tools::parse_settlement(channel, &bytes)
        .map_err(|e| anyhow::anyhow!("the {channel} settlement file {} is refused: {e}", file.display()))
}

/// `settlement parse --json`: one document with the rows, the totals and the file's hash.
pub fn settlement_json(file: &SettlementFile) -> serde_json::Value {
    serde_json::json!({
        "rows": file.rows,
        "totals": file.totals,
        "file_sha256": file.file_sha256,
    })
}

/// `settlement parse` for a person: one line per row, then the totals.
pub fn settlement_text(file: &SettlementFile) -> String {
    use meterpay_gateways::amount::fen_to_yuan;
    let mut out = String::new();
    out.push_str(&format!(
        "{:<10} {:<32} {:<20} {:<30} {:>12} {:>10}  {}\n",
        "kind", "order_no", "refund_no", "gateway_txn_id", "amount", "fee", "time"
    ));
    for r in &file.rows {
        out.push_str(&format!(
            "{:<10} {:<32} {:<20} {:<30} {:>12} {:>10}  {}\n",
            format!("{:?}", r.kind).to_lowercase(),
            r.order_no,
            r.refund_no.as_deref().unwrap_or("-"),
            r.gateway_txn_id,
            fen_to_yuan(r.amount_fen),
            r.fee,
            r.time
        ));
    }
    let t = &file.totals;
    out.push_str(&format!(
        "\npayments {} totalling {} yuan; refunds {} totalling {} yuan; fees {} yuan\nsha256 {}\n",
        t.payment_count,
        fen_to_yuan(t.payment_fen),
        t.refund_count,
        fen_to_yuan(t.refund_fen),
        fen_to_yuan(t.fee_fen),
        file.file_sha256
    ));
    out
}

/// The sandbox with all three gateways plugged in.
pub fn sandbox_with_all_gateways(time_scale: u32) -> Sandbox {
    use meterpay_gateways::sandbox::{alipay::AlipaySim, unionpay::UnionPaySim, wechatpay::WechatPaySim};
    Sandbox::new(SandboxConfig {
        time_scale: time_scale.max(1),
        refund_settle_delay: Duration::from_secs(5),
    })
    .with_sim(AlipaySim::from_fixtures())
    .with_sim(WechatPaySim::from_fixtures())
    .with_sim(UnionPaySim::from_fixtures())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Option<PathBuf> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/samples");
        if p.exists() {
            Some(p)
        } else {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "\n!!! SKIPPED: ../shared/samples is absent\n");
            None
        }
    }

    #[test]
    fn a_published_wechat_notification_verifies_and_a_changed_body_says_why_not() {
        let Some(s) = samples() else { return };
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("apiv3.txt");
        // The synthetic sample's APIv3 key (shared/spec/test-vectors.md W4/D4, a published test key).
        let apiv3 = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";
        std::fs::write(&key, apiv3).unwrap();
        let headers_path = s.join("wechatpay/notify_transaction_success_SYNTHETIC.headers.txt");
        let headers_text = std::fs::read_to_string(&headers_path).unwrap();
        let ts: i64 = headers_text
            .lines()
            .find_map(|l| l.strip_prefix("Wechatpay-Timestamp:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("a timestamp header");
        let mut args = NotifyVerifyArgs {
            channel: Channel::Wechatpay,
            gateway_keys: vec![s.join("vectors/wechatpay/wechatpay-java_wechat_pay_certificate.pem")],
            apiv3_key: Some(key),
            headers: Some(headers_path),
            body: s.join("wechatpay/notify_transaction_success_SYNTHETIC.body.json"),
            at: DateTime::from_timestamp(ts, 0),
        };
        let out = notify_verify(&args).expect("the sample verifies at its own time");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["event"]["kind"], "payment");

        let body = std::fs::read(&args.body).unwrap();
        let changed = dir.path().join("body.json");
        let mut b = body.clone();
        let i = b.iter().position(|c| *c == b'"').unwrap();
        b.insert(i, b' ');
        std::fs::write(&changed, b).unwrap();
        args.body = changed;
        let err = notify_verify(&args).unwrap_err().to_string();
        assert!(err.contains("does not verify") && err.contains("signature"), "{err}");

        args.at = Some(Utc::now());
        args.body = s.join("wechatpay/notify_transaction_success_SYNTHETIC.body.json");
        let err = notify_verify(&args).unwrap_err().to_string();
        assert!(
            err.contains("window"),
            "a notification checked long after its time is stale: {err}"
        );
    }

    #[test]
    fn the_published_alipay_bill_parses_to_rows_and_totals_and_a_truncated_one_is_refused() {
        let Some(s) = samples() else { return };
        let file = settlement_parse(
            Channel::Alipay,
            &s.join("alipay/trade_detail_20190916_gbk_transcoded.csv"),
        )
        .expect("parses");
        assert_eq!(file.totals.payment_count, 6);
        assert_eq!(file.totals.refund_count, 4);
        let j = settlement_json(&file);
        assert_eq!(j["rows"].as_array().unwrap().len(), 10);
        for row in j["rows"].as_array().unwrap() {
            assert!(row["amount_fen"].as_i64().unwrap() > 0);
            assert!(row["kind"] == "payment" || row["kind"] == "refund");
        }
        assert!(settlement_text(&file).contains("payments 6"));

        let dir = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(s.join("alipay/trade_detail_20190916_gbk_transcoded.csv")).unwrap();
        let cut = dir.path().join("cut.csv");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = settlement_parse(Channel::Alipay, &cut).unwrap_err().to_string();
        assert!(err.contains("refused"), "{err}");
    }
}
