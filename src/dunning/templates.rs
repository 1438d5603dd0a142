//! Message content (notifications.md §2.6, §5.2): neutral account notices, Chinese first,
//! English available.
//!
//! SMS: each [`MessageKind`] has one template text per language, written the way it is
//! submitted for review — Alibaba `${name}` variables, converted to Tencent's `{1}`, `{2}`… in
//! order by [`sms_template_text`]. The texts keep the providers' rules, and [`check_sms`]
//! enforces them on the filled message (a test runs it over every kind):
//!
//! - no collection wording (催款, 催缴, 征信, 上门追讨, threats) and no credit-record language;
//! - no special symbols (¥ ★ ※ → emoji): amounts are written with "元";
//! - no 【】 in the body (the platform adds the signature) and no opt-out wording (Alibaba rejects
//!   "回复TD退订" in notification templates; residents opt out through the link or customer
//!   service, and a reply of TD/T/N/退订 is still honoured, see `policy::parse_sms_reply`);
//! - no two variables adjacent (Tencent), no template made only of variables;
//! - the link's domain and path are constant text; only the opaque token is a variable (links may
//!   not be passed in variables); each variable at most 35 characters, none holding a URL;
//! - at most 500 characters including the signature.
//!
//! Premises are named by building/unit/room, never by the resident's name; the amount is the
//! total of the bills the message covers (one combined message per household).

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::domain::ids::Utility;
use crate::domain::Fen;

use super::policy::Track;
use super::sms::ProviderKind;

/// Language of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    Zh,
    En,
}

/// What a message is about; one SMS template per kind (and per language).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    BillIssued,
    PreDue,
    Overdue,
    /// The overdue notice with the contractual late-fee sentence (whether it passes review is
    /// uncertain, so communities choose; notifications.md §2.6).
    OverdueLateFee,
    FinalReminder,
    LowBalance,
    ZeroBalance,
}

impl MessageKind {
    pub const ALL: [MessageKind; 7] = [
        MessageKind::BillIssued,
        MessageKind::PreDue,
        MessageKind::Overdue,
        MessageKind::OverdueLateFee,
        MessageKind::FinalReminder,
        MessageKind::LowBalance,
        MessageKind::ZeroBalance,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::BillIssued => "bill_issued",
            MessageKind::PreDue => "pre_due",
            MessageKind::Overdue => "overdue",
            MessageKind::OverdueLateFee => "overdue_late_fee",
            MessageKind::FinalReminder => "final_reminder",
            MessageKind::LowBalance => "low_balance",
            MessageKind::ZeroBalance => "zero_balance",
        }
    }
}

/// One line of the bill summary in an e-mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryLine {
    /// e.g. "电费 第一档" / "Electricity, tier 1".
    pub label: String,
    /// Previous and current readings and usage, as printed on the bill.
    pub previous: Option<String>,
    pub current: Option<String>,
    pub usage: Option<String>,
    pub amount: Fen,
}

/// The facts a message states. Built by the caller from the policy decision and the bills.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageFacts {
    pub kind: MessageKind,
    pub language: Language,
    /// Building/unit/room, e.g. "3栋2单元501".
    pub room: String,
    /// The billing periods covered (year, month), oldest first.
    pub periods: Vec<(i32, u32)>,
    pub tracks: Vec<Track>,
    /// Total amount the message states (owed, or the balance for prepaid notices).
    pub amount: Fen,
    /// Due date (notices) or the payment deadline (final reminder).
    pub due: Option<NaiveDate>,
    /// Estimated days left (low balance).
    pub days_left: Option<u32>,
    /// Customer service number (fixed line, 400 or 95 number).
    pub service_tel: String,
    /// The opaque pay-link token; the link's domain and path are constant text.
    pub pay_token: String,
    /// E-mail only: the bill lines.
    pub lines: Vec<SummaryLine>,
    /// E-mail only: the community's name, used as the sender's name and in the subject.
    pub community_name: String,
}

/// An SMS ready for a provider: the template kind and its variables in template order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsText {
    pub kind: MessageKind,
    pub params: Vec<(String, String)>,
    /// The filled text (without the signature), as the resident reads it.
    pub text: String,
}

/// An e-mail's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailText {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The Alibaba-style template text (as submitted for review) of `kind`. `pay_base` is the
/// constant link prefix, e.g. `https://pay.example.cn`.
pub fn template_text(kind: MessageKind, lang: Language, pay_base: &str) -> String {
    let link = format!("{}/pay/${{token}}", pay_base.trim_end_matches('/'));
    match lang {
        Language::Zh => match kind {
            MessageKind::BillIssued => format!("您好，${{room}}，${{period}}账单已出，${{utility}}合计${{amount}}元，请于${{due}}前缴纳。在线缴费：{link} ，咨询电话${{tel}}。"),
            MessageKind::PreDue => format!("您好，${{room}}，${{period}}账单${{utility}}合计${{amount}}元，缴费截止日为${{due}}，请留意按时缴纳。在线缴费：{link} ，咨询电话${{tel}}。"),
            MessageKind::Overdue => format!("您好，${{room}}，${{period}}账单${{utility}}合计${{amount}}元已过缴费截止日${{due}}，请尽快缴纳。在线缴费：{link} ，咨询电话${{tel}}。"),
            MessageKind::OverdueLateFee => format!("您好，${{room}}，${{period}}账单${{utility}}合计${{amount}}元已过缴费截止日${{due}}，逾期将按合同约定计收违约金，请尽快缴纳。在线缴费：{link} ，咨询电话${{tel}}。"),
            MessageKind::FinalReminder => format!("您好，${{room}}，${{period}}账单${{utility}}合计${{amount}}元尚未缴纳，请于${{due}}前缴纳，书面通知将另行送达。在线缴费：{link} ，咨询电话${{tel}}。"),
            MessageKind::LowBalance => format!("您好，${{room}}，${{utility}}余额${{amount}}元，预计可用${{days}}天，请及时充值。在线充值：{link} ，咨询电话${{tel}}。"),
            MessageKind::ZeroBalance => format!("您好，${{room}}，${{utility}}余额${{amount}}元，已用完预付金额，请及时充值。在线充值：{link} ，咨询电话${{tel}}。"),
        },
        Language::En => match kind {
            MessageKind::BillIssued => format!("Hello, ${{room}}: your bill for ${{period}} is ready. ${{utility}} total ${{amount}} yuan, due by ${{due}}. Pay online: {link} . Questions: ${{tel}}."),
            MessageKind::PreDue => format!("Hello, ${{room}}: your bill for ${{period}} (${{utility}}) of ${{amount}} yuan is due by ${{due}}. Pay online: {link} . Questions: ${{tel}}."),
            MessageKind::Overdue => format!("Hello, ${{room}}: your bill for ${{period}} (${{utility}}) of ${{amount}} yuan was due on ${{due}}. Please pay soon. Pay online: {link} . Questions: ${{tel}}."),
            MessageKind::OverdueLateFee => format!("Hello, ${{room}}: your bill for ${{period}} (${{utility}}) of ${{amount}} yuan was due on ${{due}}; the late fee agreed in the contract applies. Please pay soon. Pay online: {link} . Questions: ${{tel}}."),
            MessageKind::FinalReminder => format!("Hello, ${{room}}: your bill for ${{period}} (${{utility}}) of ${{amount}} yuan is still unpaid. Please pay by ${{due}}; a written notice follows. Pay online: {link} . Questions: ${{tel}}."),
            MessageKind::LowBalance => format!("Hello, ${{room}}: your ${{utility}} balance is ${{amount}} yuan, about ${{days}} days of use. Please top up. Top up online: {link} . Questions: ${{tel}}."),
            MessageKind::ZeroBalance => format!("Hello, ${{room}}: your ${{utility}} balance is ${{amount}} yuan; the prepaid amount is used up. Please top up. Top up online: {link} . Questions: ${{tel}}."),
        },
    }
}

/// The variable names of a template, in order of appearance.
pub fn variables(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find("${") {
        rest = &rest[i + 2..];
        if let Some(j) = rest.find('}') {
            out.push(rest[..j].to_string());
            rest = &rest[j + 1..];
        }
    }
    out
}

/// The template text in a provider's variable syntax (Tencent: `{1}`, `{2}`… in order).
pub fn sms_template_text(kind: MessageKind, lang: Language, pay_base: &str, provider: ProviderKind) -> String {
    let t = template_text(kind, lang, pay_base);
    match provider {
        ProviderKind::Aliyun => t,
        ProviderKind::Tencent => {
            let mut out = t.clone();
            for (i, name) in variables(&t).iter().enumerate() {
                out = out.replacen(&format!("${{{name}}}"), &format!("{{{}}}", i + 1), 1);
            }
            out
        }
    }
}

fn utility_label(tracks: &[Track], lang: Language) -> String {
    let has = |t: Track| tracks.contains(&t);
    let (e, w, p) = (
        has(Track::Utility(Utility::Electricity)),
        has(Track::Utility(Utility::Water)),
        has(Track::PropertyFee),
    );
    match lang {
        Language::Zh => {
            let mut s = String::new();
            if w {
                s.push('水');
            }
            if e {
                s.push('电');
            }
            if !s.is_empty() {
                s.push('费');
            }
            if p {
                if !s.is_empty() {
                    s.push('及');
                }
                s.push_str("物业费");
            }
            s
        }
        Language::En => {
            let mut parts = Vec::new();
            if e {
                parts.push("electricity");
            }
            if w {
                parts.push("water");
            }
            if p {
                parts.push("property fee");
            }
            parts.join(" and ")
        }
    }
}

fn period_label(periods: &[(i32, u32)], lang: Language) -> String {
    let (Some(first), Some(last)) = (periods.first(), periods.last()) else {
        return String::new();
    };
    let one = |(y, m): (i32, u32)| match lang {
        Language::Zh => format!("{y}年{m}月"),
        Language::En => format!("{y}-{m:02}"),
    };
    if first == last {
        one(*first)
    } else {
        match lang {
            Language::Zh => format!("{}至{}", one(*first), one(*last)),
            Language::En => format!("{} to {}", one(*first), one(*last)),
        }
    }
}

fn date_label(d: NaiveDate, lang: Language) -> String {
    match lang {
        Language::Zh => format!("{}月{}日", d.month(), d.day()),
        Language::En => d.format("%Y-%m-%d").to_string(),
    }
}

/// The SMS for `facts`: variables in the template's order, and the filled text.
pub fn sms(facts: &MessageFacts, pay_base: &str) -> SmsText {
    let template = template_text(facts.kind, facts.language, pay_base);
    let value = |name: &str| -> String {
        match name {
            "room" => facts.room.clone(),
            "period" => period_label(&facts.periods, facts.language),
            "utility" => utility_label(&facts.tracks, facts.language),
            "amount" => facts.amount.to_string(),
            "due" => facts.due.map(|d| date_label(d, facts.language)).unwrap_or_default(),
            "days" => facts.days_left.map(|d| d.to_string()).unwrap_or_default(),
            "tel" => facts.service_tel.clone(),
            "token" => facts.pay_token.clone(),
            _ => String::new(),
        }
    };
    let params: Vec<(String, String)> = variables(&template)
        .into_iter()
        .map(|n| {
            let v = value(&n);
            (n, v)
        })
        .collect();
    let mut text = template;
    for (k, v) in &params {
        text = text.replace(&format!("${{{k}}}"), v);
    }
    SmsText {
        kind: facts.kind,
        params,
        text,
    }
}

/// Why an SMS would be refused by review or by the provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("the message uses wording the providers refuse: {0:?}")]
    BannedWording(String),
    #[error("the message contains a symbol the providers refuse: {0:?}")]
    BannedSymbol(char),
    #[error("the message body must not contain 【】 (the platform adds the signature)")]
    SignatureBrackets,
    #[error("variable {0} is empty")]
    EmptyVariable(String),
    #[error("variable {0} is longer than {1} characters")]
    VariableTooLong(String, usize),
    #[error("variable {0} holds a link; links must be constant text in the template")]
    LinkInVariable(String),
    #[error("variables {0} and {1} are adjacent (Tencent refuses that)")]
    AdjacentVariables(String, String),
    #[error("the message is {0} characters with its signature; the limit is 500")]
    TooLong(usize),
}

/// Longest variable value we send (Alibaba's limit for a variable).
pub const MAX_VARIABLE_CHARS: usize = 35;

const BANNED_WORDS: [&str; 12] = [
    "催款",
    "催缴",
    "催收",
    "征信",
    "上门追讨",
    "追讨",
    "黑名单",
    "起诉",
    "法院",
    "停水",
    "停电",
    "退订",
];
const BANNED_OPT_OUT: [&str; 3] = ["回复TD", "回T", "拒收请回复"];

/// Check a template and its filled text against the rules above.
pub fn check_sms(template: &str, sms: &SmsText, sign_name: &str) -> Result<(), ContentError> {
    for w in BANNED_WORDS.iter().chain(BANNED_OPT_OUT.iter()) {
        if sms.text.contains(w) {
            return Err(ContentError::BannedWording((*w).to_string()));
        }
    }
    if let Some(c) = sms.text.chars().find(|c| {
        matches!(c, '¥' | '￥' | '★' | '☆' | '※' | '→' | '←' | '♥' | '✔')
            || ('\u{1F000}'..='\u{1FAFF}').contains(c)
            || ('\u{2600}'..='\u{27BF}').contains(c)
    }) {
        return Err(ContentError::BannedSymbol(c));
    }
    if sms.text.contains('【') || sms.text.contains('】') {
        return Err(ContentError::SignatureBrackets);
    }
    for (k, v) in &sms.params {
        if v.is_empty() {
            return Err(ContentError::EmptyVariable(k.clone()));
        }
        if v.chars().count() > MAX_VARIABLE_CHARS {
            return Err(ContentError::VariableTooLong(k.clone(), MAX_VARIABLE_CHARS));
        }
        if v.contains("://") || v.to_ascii_lowercase().contains("www.") {
            return Err(ContentError::LinkInVariable(k.clone()));
        }
    }
    let names = variables(template);
    for pair in names.windows(2) {
        if template.contains(&format!("${{{}}}${{{}}}", pair[0], pair[1])) {
            return Err(ContentError::AdjacentVariables(pair[0].clone(), pair[1].clone()));
        }
    }
    let total = sms.text.chars().count() + sign_name.chars().count() + 2;
    if total > 500 {
        return Err(ContentError::TooLong(total));
    }
    Ok(())
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The e-mail for `facts`: subject, plain text and HTML, both carrying the bill summary, the
/// pay link and the link to stop reminder e-mails.
pub fn email(facts: &MessageFacts, pay_url: &str, unsubscribe_url: &str) -> EmailText {
    let lang = facts.language;
    let period = period_label(&facts.periods, lang);
    let utility = utility_label(&facts.tracks, lang);
    let due = facts.due.map(|d| date_label(d, lang)).unwrap_or_default();
    let amount = facts.amount.to_string();
    let (subject, intro, pay_words, lines_title, total_words, prefs, tel_words, late_fee) = match lang {
        Language::Zh => {
            let what = match facts.kind {
                MessageKind::BillIssued => "账单",
                MessageKind::PreDue => "缴费提醒",
                MessageKind::Overdue | MessageKind::OverdueLateFee => "缴费提醒",
                MessageKind::FinalReminder => "缴费通知",
                MessageKind::LowBalance | MessageKind::ZeroBalance => "余额提醒",
            };
            let intro = match facts.kind {
                MessageKind::BillIssued => format!(
                    "您好，{}{}账单已出，{}合计{}元，请于{}前缴纳。",
                    facts.room, period, utility, amount, due
                ),
                MessageKind::PreDue => format!(
                    "您好，{}{}账单{}合计{}元，缴费截止日为{}，请留意按时缴纳。",
                    facts.room, period, utility, amount, due
                ),
                MessageKind::Overdue | MessageKind::OverdueLateFee => format!(
                    "您好，{}{}账单{}合计{}元已过缴费截止日{}，请尽快缴纳。",
                    facts.room, period, utility, amount, due
                ),
                MessageKind::FinalReminder => format!(
                    "您好，{}{}账单{}合计{}元尚未缴纳，请于{}前缴纳。书面通知将另行送达。",
                    facts.room, period, utility, amount, due
                ),
                MessageKind::LowBalance => format!(
                    "您好，{}{}余额{}元，预计可用{}天，请及时充值。",
                    facts.room,
                    utility,
                    amount,
                    facts.days_left.unwrap_or(0)
                ),
                MessageKind::ZeroBalance => format!(
                    "您好，{}{}余额{}元，已用完预付金额，请及时充值。",
                    facts.room, utility, amount
                ),
            };
            let subject = match facts.kind {
                MessageKind::LowBalance | MessageKind::ZeroBalance => format!(
                    "【{}】{} {}{}（余额{}元）",
                    facts.community_name, facts.room, utility, what, amount
                ),
                _ => format!(
                    "【{}】{} {}{}{}（应缴{}元）",
                    facts.community_name, facts.room, period, utility, what, amount
                ),
            };
            (
                subject,
                intro,
                "在线缴费",
                "账单明细",
                "合计",
                "不想再收到缴费提醒邮件？点击退订：",
                "咨询电话",
                "逾期未缴的，按供用合同约定计收违约金。",
            )
        }
        Language::En => {
            let what = match facts.kind {
                MessageKind::BillIssued => "bill",
                MessageKind::PreDue | MessageKind::Overdue | MessageKind::OverdueLateFee => "payment reminder",
                MessageKind::FinalReminder => "payment notice",
                MessageKind::LowBalance | MessageKind::ZeroBalance => "balance notice",
            };
            let intro = match facts.kind {
                MessageKind::BillIssued => format!("Hello, {}: your bill for {} is ready. {} total {} yuan, due by {}.", facts.room, period, utility, amount, due),
                MessageKind::PreDue => format!("Hello, {}: your bill for {} ({}) of {} yuan is due by {}.", facts.room, period, utility, amount, due),
                MessageKind::Overdue | MessageKind::OverdueLateFee => format!("Hello, {}: your bill for {} ({}) of {} yuan was due on {}. Please pay soon.", facts.room, period, utility, amount, due),
                MessageKind::FinalReminder => format!("Hello, {}: your bill for {} ({}) of {} yuan is still unpaid. Please pay by {}. A written notice follows.", facts.room, period, utility, amount, due),
                MessageKind::LowBalance => format!("Hello, {}: your {} balance is {} yuan, about {} days of use. Please top up.", facts.room, utility, amount, facts.days_left.unwrap_or(0)),
                MessageKind::ZeroBalance => format!("Hello, {}: your {} balance is {} yuan; the prepaid amount is used up. Please top up.", facts.room, utility, amount),
            };
            let subject = match facts.kind {
                MessageKind::LowBalance | MessageKind::ZeroBalance => format!(
                    "[{}] {} {} {} (balance {} yuan)",
                    facts.community_name, facts.room, utility, what, amount
                ),
                _ => format!(
                    "[{}] {} {} {} {} ({} yuan due)",
                    facts.community_name, facts.room, period, utility, what, amount
                ),
            };
            (
                subject,
                intro,
                "Pay online",
                "Bill details",
                "Total",
                "No longer want payment reminder e-mails? Unsubscribe:",
                "Questions",
                "Late payment incurs the late fee agreed in the supply contract.",
            )
        }
    };
    let show_late_fee = matches!(
        facts.kind,
        MessageKind::Overdue | MessageKind::OverdueLateFee | MessageKind::FinalReminder
    );
    let mut text = format!("{intro}\n\n");
    let mut rows = String::new();
    if !facts.lines.is_empty() {
        text.push_str(&format!("{lines_title}\n"));
        for l in &facts.lines {
            let readings = match (&l.previous, &l.current, &l.usage) {
                (Some(p), Some(c), Some(u)) => format!(" ({p} → {c}, {u})"),
                (_, _, Some(u)) => format!(" ({u})"),
                _ => String::new(),
            };
            text.push_str(&format!("  {}{}: {}\n", l.label, readings, l.amount));
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td style=\"text-align:right\">{}</td></tr>",
                html_escape(&l.label),
                html_escape(l.previous.as_deref().unwrap_or("")),
                html_escape(l.current.as_deref().unwrap_or("")),
                html_escape(l.usage.as_deref().unwrap_or("")),
                l.amount
            ));
        }
        text.push_str(&format!("  {total_words}: {amount}\n\n"));
    }
    if show_late_fee {
        text.push_str(&format!("{late_fee}\n"));
    }
    text.push_str(&format!(
        "{pay_words}: {pay_url}\n{tel_words}: {}\n\n{prefs} {unsubscribe_url}\n",
        facts.service_tel
    ));
    let table = if rows.is_empty() {
        String::new()
    } else {
        format!(
            "<h3>{}</h3><table cellpadding=\"4\" style=\"border-collapse:collapse\">{rows}<tr><td colspan=\"4\"><b>{}</b></td><td style=\"text-align:right\"><b>{amount}</b></td></tr></table>",
            html_escape(lines_title),
            html_escape(total_words)
        )
    };
    let html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title></head><body style=\"font-family:sans-serif\">\
         <p>{}</p>{table}{}<p><a href=\"{}\">{}</a></p><p>{}: {}</p>\
         <p style=\"color:#666;font-size:small\">{} <a href=\"{}\">{}</a></p></body></html>",
        html_escape(&subject),
        html_escape(&intro),
        if show_late_fee { format!("<p>{}</p>", html_escape(late_fee)) } else { String::new() },
        html_escape(pay_url),
        html_escape(pay_words),
        html_escape(tel_words),
        html_escape(&facts.service_tel),
        html_escape(prefs),
        html_escape(unsubscribe_url),
        html_escape(unsubscribe_url),
    );
    EmailText { subject, text, html }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(kind: MessageKind, lang: Language) -> MessageFacts {
        MessageFacts {
            kind,
            language: lang,
            room: "3栋2单元501".into(),
            periods: vec![(2026, 5), (2026, 6)],
            tracks: vec![Track::Utility(Utility::Electricity), Track::Utility(Utility::Water)],
            amount: Fen::new(16325),
            due: NaiveDate::from_ymd_opt(2026, 7, 15),
            days_left: Some(3),
            service_tel: "4001234567".into(),
            pay_token: "AQEqAAAAAGl4Jc3bY2l1-sYp0pGx".into(),
            lines: vec![SummaryLine {
                label: "电费".into(),
                previous: Some("1200.0".into()),
                current: Some("1350.0".into()),
                usage: Some("150 kWh".into()),
                amount: Fen::new(8325),
            }],
            community_name: "阳光花园物业".into(),
        }
    }

    #[test]
    fn every_template_passes_the_content_rules_in_both_languages() {
        for kind in MessageKind::ALL {
            for lang in [Language::Zh, Language::En] {
                let f = facts(kind, lang);
                let t = template_text(kind, lang, "https://pay.example.cn");
                let s = sms(&f, "https://pay.example.cn");
                check_sms(&t, &s, "阳光花园物业").unwrap_or_else(|e| panic!("{kind:?} {lang:?}: {e}: {}", s.text));
                assert!(!s.text.contains("${"), "all variables filled: {}", s.text);
                assert!(
                    s.text
                        .contains("https://pay.example.cn/pay/AQEqAAAAAGl4Jc3bY2l1-sYp0pGx"),
                    "{}",
                    s.text
                );
                assert!(
                    t.contains("https://pay.example.cn/pay/${token}"),
                    "the link is constant text"
                );
            }
        }
    }

    #[test]
    fn the_bill_notice_states_room_period_amount_and_due_date_in_chinese() {
        let s = sms(&facts(MessageKind::BillIssued, Language::Zh), "https://pay.example.cn");
        assert_eq!(
            s.text,
            "您好，3栋2单元501，2026年5月至2026年6月账单已出，水电费合计163.25元，请于7月15日前缴纳。在线缴费：https://pay.example.cn/pay/AQEqAAAAAGl4Jc3bY2l1-sYp0pGx ，咨询电话4001234567。"
        );
        let names: Vec<&str> = s.params.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["room", "period", "utility", "amount", "due", "token", "tel"]);
    }

    #[test]
    fn tencent_templates_number_the_variables_in_order() {
        let t = sms_template_text(
            MessageKind::LowBalance,
            Language::Zh,
            "https://p.cn",
            ProviderKind::Tencent,
        );
        assert_eq!(
            t,
            "您好，{1}，{2}余额{3}元，预计可用{4}天，请及时充值。在线充值：https://p.cn/pay/{5} ，咨询电话{6}。"
        );
    }

    #[test]
    fn collection_wording_symbols_brackets_links_and_long_variables_are_refused() {
        let t = template_text(MessageKind::Overdue, Language::Zh, "https://p.cn");
        let base = sms(&facts(MessageKind::Overdue, Language::Zh), "https://p.cn");
        let with_text = |text: String| SmsText { text, ..base.clone() };
        assert!(matches!(
            check_sms(&t, &with_text(base.text.replace("请尽快缴纳", "现催缴")), "x"),
            Err(ContentError::BannedWording(_))
        ));
        assert!(matches!(
            check_sms(&t, &with_text(format!("{}回复TD退订", base.text)), "x"),
            Err(ContentError::BannedWording(_))
        ));
        assert!(matches!(
            check_sms(&t, &with_text(base.text.replace("元", "¥")), "x"),
            Err(ContentError::BannedSymbol('¥'))
        ));
        assert!(matches!(
            check_sms(&t, &with_text(format!("【物业】{}", base.text)), "x"),
            Err(ContentError::SignatureBrackets)
        ));
        let mut long = base.clone();
        long.params[0].1 = "一".repeat(36);
        assert!(matches!(
            check_sms(&t, &long, "x"),
            Err(ContentError::VariableTooLong(_, 35))
        ));
        let mut link = base.clone();
        link.params[0].1 = "https://evil.example".into();
        assert!(matches!(
            check_sms(&t, &link, "x"),
            Err(ContentError::LinkInVariable(_))
        ));
        assert!(matches!(
            check_sms(
                "${a}${b}",
                &SmsText {
                    params: vec![],
                    ..base.clone()
                },
                "x"
            ),
            Err(ContentError::AdjacentVariables(_, _))
        ));
        assert!(matches!(
            check_sms(&t, &with_text("字".repeat(499)), "物业"),
            Err(ContentError::TooLong(503))
        ));
    }

    #[test]
    fn the_email_carries_the_summary_the_pay_link_and_the_unsubscribe_link_in_both_parts() {
        let e = email(
            &facts(MessageKind::Overdue, Language::Zh),
            "https://p.cn/pay/T",
            "https://p.cn/unsubscribe/U",
        );
        assert_eq!(
            e.subject,
            "【阳光花园物业】3栋2单元501 2026年5月至2026年6月水电费缴费提醒（应缴163.25元）"
        );
        for part in [&e.text, &e.html] {
            assert!(part.contains("https://p.cn/pay/T"));
            assert!(part.contains("https://p.cn/unsubscribe/U"));
            assert!(part.contains("83.25"), "the bill line");
            assert!(part.contains("163.25"));
            assert!(
                part.contains("违约金"),
                "the late-fee clause reference on overdue notices"
            );
        }
        assert!(e.html.contains("<table"));
        let en = email(
            &facts(MessageKind::BillIssued, Language::En),
            "https://p.cn/pay/T",
            "https://p.cn/unsubscribe/U",
        );
        assert!(en
            .subject
            .starts_with("[阳光花园物业] 3栋2单元501 2026-05 to 2026-06 electricity and water bill"));
        assert!(!en.text.contains("late fee"), "no late-fee sentence on a bill notice");
    }
}
