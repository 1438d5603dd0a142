//! The message catalogue: every word a page shows, in Chinese (first, the default) and English.
//!
//! Add a line to [`MESSAGES`] — `("area.key", "中文", "English")` — and use it in a template as
//! `ctx.t("area.key")`, or `ctx.tf("area.key", &[("name", value)])` for a message with `{name}`
//! placeholders. A unit test refuses duplicate keys, empty texts, placeholders that differ
//! between the two languages, and any `.t("…")`/`.tf("…"` key used under `src/http/` that is not
//! in the catalogue, so a missing message fails `cargo test` rather than showing a key to a user.
//!
//! The language of a request: the `meterpay_lang` cookie (set by `GET /lang/{zh|en}?next=…`, the
//! switch in every page's header), else the best of `Accept-Language`, else Chinese.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::http::HeaderMap;

/// A language pages are shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    Zh,
    En,
}

/// The cookie holding the chosen language.
pub const LANG_COOKIE: &str = "meterpay_lang";

impl Lang {
    /// The `lang` attribute / `Content-Language` value.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }

    /// The short form used in URLs and the cookie.
    pub fn short(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }

    pub fn from_short(s: &str) -> Option<Lang> {
        match s {
            "zh" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The other language (for the switch).
    pub fn other(self) -> Lang {
        match self {
            Lang::Zh => Lang::En,
            Lang::En => Lang::Zh,
        }
    }

    /// Cookie first, then `Accept-Language` (by q-weight), then Chinese.
    pub fn from_headers(headers: &HeaderMap) -> Lang {
        if let Some(l) = super::super::auth::cookie_value(headers, LANG_COOKIE).and_then(|v| Lang::from_short(&v)) {
            return l;
        }
        headers
            .get(axum::http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .map(Lang::from_accept_language)
            .unwrap_or_default()
    }

    /// The best supported language in an `Accept-Language` value; Chinese if none is supported.
    pub fn from_accept_language(value: &str) -> Lang {
        let mut best: Option<(u32, Lang)> = None;
        for item in value.split(',') {
            let mut parts = item.trim().split(';');
            let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            // q as thousandths, so no floats are needed to compare weights.
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .map(parse_q)
                .unwrap_or(1000);
            let lang = if tag == "zh" || tag.starts_with("zh-") {
                Lang::Zh
            } else if tag == "en" || tag.starts_with("en-") {
                Lang::En
            } else {
                continue;
            };
            if q > 0 && best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, lang));
            }
        }
        best.map(|(_, l)| l).unwrap_or_default()
    }

    /// The message `key` in this language (the key itself, logged, if it is missing).
    pub fn t(self, key: &str) -> &'static str {
        match catalogue().get(key) {
            Some((zh, en)) => match self {
                Lang::Zh => zh,
                Lang::En => en,
            },
            None => {
                tracing::warn!(key, "message missing from the catalogue");
                "?"
            }
        }
    }

    /// The message `key` with each `{name}` replaced by its value.
    pub fn tf(self, key: &str, args: &[(&str, &str)]) -> String {
        let mut s = self.t(key).to_string();
        for (name, value) in args {
            s = s.replace(&format!("{{{name}}}"), value);
        }
        s
    }
}

fn parse_q(s: &str) -> u32 {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let int: u32 = int.parse().unwrap_or(0).min(1);
    let frac: String = frac.chars().chain("000".chars()).take(3).collect();
    (int * 1000 + frac.parse::<u32>().unwrap_or(0)).min(1000)
}

fn catalogue() -> &'static HashMap<&'static str, (&'static str, &'static str)> {
    static MAP: OnceLock<HashMap<&'static str, (&'static str, &'static str)>> = OnceLock::new();
    MAP.get_or_init(|| all_messages().map(|(k, zh, en)| (*k, (*zh, *en))).collect())
}

/// Every message: these, then the pages' own ([`crate::pages::MESSAGES`]).
fn all_messages() -> impl Iterator<Item = &'static (&'static str, &'static str, &'static str)> {
    MESSAGES.iter().chain(crate::pages::MESSAGES.iter())
}

/// `(key, Chinese, English)`. Group by page; keep keys `area.name`.
pub const MESSAGES: &[(&str, &str, &str)] = &[
    // layout
    ("app.name", "表计缴费", "meterpay"),
    ("layout.skip", "跳到正文", "Skip to content"),
    ("layout.nav", "主导航", "Main navigation"),
    ("layout.switch_lang", "English", "中文"),
    ("layout.switch_lang_label", "切换语言", "Change language"),
    (
        "layout.signed_in_as",
        "已登录：{name}（{role}）",
        "Signed in as {name} ({role})",
    ),
    ("layout.sign_out", "退出登录", "Sign out"),
    // roles
    ("role.admin", "管理员", "administrator"),
    ("role.operator", "运维", "operator"),
    ("role.finance", "财务", "finance"),
    ("role.read_only", "只读", "read-only"),
    // navigation
    ("nav.home", "首页", "Home"),
    ("nav.audit", "审计日志", "Audit log"),
    ("nav.users", "员工账号", "Staff users"),
    ("nav.password", "修改密码", "Change password"),
    // sign-in
    ("sign_in.title", "员工登录", "Staff sign-in"),
    ("sign_in.name", "用户名", "User name"),
    ("sign_in.password", "密码", "Password"),
    ("sign_in.submit", "登录", "Sign in"),
    ("sign_in.failed", "用户名或密码错误。", "Wrong user name or password."),
    (
        "sign_in.locked",
        "登录失败次数过多，请 {minutes} 分钟后再试。",
        "Too many failed sign-ins. Try again in {minutes} minutes.",
    ),
    (
        "sign_in.expired",
        "登录表单已过期，请重新登录。",
        "The sign-in form expired. Please sign in again.",
    ),
    ("sign_in.signed_out", "您已退出登录。", "You have signed out."),
    // home
    ("home.title", "工作台", "Dashboard"),
    ("home.greeting", "您好，{name}", "Hello, {name}"),
    ("home.your_role", "您的角色：{role}", "Your role: {role}"),
    ("home.sections", "您可以使用的功能", "What you can use"),
    // audit log
    ("audit.title", "审计日志", "Audit log"),
    ("audit.caption", "最近 {n} 条记录", "The latest {n} records"),
    ("audit.at", "时间", "When"),
    ("audit.actor", "操作人", "Who"),
    ("audit.action", "操作", "What"),
    ("audit.subject", "对象", "Subject"),
    ("audit.change", "变更", "Change"),
    // users
    ("users.title", "员工账号", "Staff users"),
    ("users.name", "用户名", "User name"),
    ("users.role", "角色", "Role"),
    ("users.state", "状态", "State"),
    ("users.active", "启用", "active"),
    ("users.disabled", "已停用", "disabled"),
    // password
    ("password.title", "修改密码", "Change password"),
    ("password.current", "当前密码", "Current password"),
    ("password.new", "新密码", "New password"),
    ("password.confirm", "确认新密码", "Repeat the new password"),
    (
        "password.hint",
        "至少 {n} 个字符，且不能与用户名相同。",
        "At least {n} characters, and not your user name.",
    ),
    ("password.submit", "保存新密码", "Save the new password"),
    (
        "password.changed",
        "密码已修改，其他设备上的登录已退出。",
        "Password changed; your other sessions were signed out.",
    ),
    (
        "password.wrong_current",
        "当前密码不正确。",
        "The current password is wrong.",
    ),
    (
        "password.mismatch",
        "两次输入的新密码不一致。",
        "The two new passwords differ.",
    ),
    // errors
    ("error.title", "出错了", "Something went wrong"),
    ("error.back_home", "返回首页", "Back to the dashboard"),
    // charts
    ("chart.no_data", "暂无数据", "No data yet"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_best_supported_language() {
        assert_eq!(Lang::from_accept_language("en-US,en;q=0.9"), Lang::En);
        assert_eq!(Lang::from_accept_language("zh-CN,zh;q=0.9,en;q=0.8"), Lang::Zh);
        assert_eq!(Lang::from_accept_language("fr-FR, en;q=0.5, zh;q=0.7"), Lang::Zh);
        assert_eq!(
            Lang::from_accept_language("de-DE"),
            Lang::Zh,
            "unsupported falls back to Chinese"
        );
        assert_eq!(
            Lang::from_accept_language("zh;q=0, en;q=0.1"),
            Lang::En,
            "q=0 means not wanted"
        );
        assert_eq!(Lang::from_accept_language(""), Lang::Zh);
    }

    #[test]
    fn the_cookie_overrides_accept_language() {
        let mut h = HeaderMap::new();
        h.insert("accept-language", "en".parse().unwrap());
        assert_eq!(Lang::from_headers(&h), Lang::En);
        h.insert("cookie", "meterpay_lang=zh".parse().unwrap());
        assert_eq!(Lang::from_headers(&h), Lang::Zh);
    }

    #[test]
    fn messages_fill_their_placeholders() {
        assert_eq!(Lang::En.tf("home.greeting", &[("name", "Li")]), "Hello, Li");
        assert_eq!(Lang::Zh.tf("home.greeting", &[("name", "李")]), "您好，李");
        assert_eq!(Lang::En.t("no.such.key"), "?");
    }

    fn placeholders(s: &str) -> Vec<String> {
        let mut out: Vec<String> = s
            .split('{')
            .skip(1)
            .filter_map(|p| p.split_once('}').map(|(n, _)| n.to_string()))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn the_catalogue_has_unique_keys_both_languages_and_matching_placeholders() {
        let mut seen = std::collections::HashSet::new();
        for (k, zh, en) in all_messages() {
            assert!(seen.insert(*k), "duplicate message key {k}");
            assert!(!zh.is_empty() && !en.is_empty(), "{k} lacks a text");
            assert_eq!(placeholders(zh), placeholders(en), "{k}: placeholders differ");
        }
    }

    #[test]
    fn every_message_key_used_in_the_http_code_is_in_the_catalogue() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out)
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p)
                }
            }
        }
        let mut files = Vec::new();
        for dir in ["src/http", "src/pages"] {
            walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir), &mut files);
        }
        let mut checked = 0;
        for f in files {
            let source = std::fs::read_to_string(&f).unwrap();
            // Doc comments show examples with keys of pages yet to come: skip comments.
            let text: String = source
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for pat in [".t(\"", ".tf(\""] {
                for chunk in text.split(pat).skip(1) {
                    let key = chunk.split('"').next().unwrap();
                    if key.chars().all(|c| c.is_ascii_lowercase() || c == '.' || c == '_') && key.contains('.') {
                        if key == "no.such.key" {
                            continue;
                        }
                        assert!(
                            catalogue().contains_key(key),
                            "{}: message {key} is not in the catalogue",
                            f.display()
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 10, "the scan found the keys the pages use ({checked})");
    }
}
