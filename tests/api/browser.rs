//! The browser-test harness: headless Chromium driven through chromedriver (WebDriver) with
//! `fantoccini`.
//!
//! ```ignore
//! let Some(b) = Browser::start("my_test_name", MOBILE).await else { return };   // loud skip
//! b.goto(&format!("{}/staff/sign-in", app.address)).await;
//! b.fill("#name", "demo-admin").await;
//! b.click("button[type=submit]").await;
//! assert!(b.text("h1").await.contains("工作台"));
//! b.assert_accessible("home").await;     // labels, contrast ≥ 4.5:1, lang, title, landmarks
//! b.screenshot("home-375").await;        // target/test-artefacts/home-375.png
//! b.close().await;
//! ```
//!
//! - Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//!   `chromium-driver`; `.ci/run` installs them). When they are missing the test prints
//!   `!!! SKIPPED …` and passes — unless `METERPAY_REQUIRE_BROWSER=1` (CI), when it fails.
//! - Each [`Browser`] runs its own chromedriver on a free port and Chromium with a fresh
//!   profile directory and the flags this machine needs (`--headless --no-sandbox --disable-gpu
//!   --disable-quic …`). One browser runs at a time across the test binary (a semaphore), so
//!   parallel tests do not starve two cores.
//! - Screenshots go to `target/test-artefacts/NAME.png` (CI keeps them as artefacts).
//! - The accessibility check is our own script, run in the page ([`A11Y_CHECK`]): every
//!   visible form control has an accessible name (label, `aria-label` or `aria-labelledby`;
//!   button text), images have `alt`, SVG images have a name, links have text, the page has
//!   `lang`, a `<title>`, a `<main>` and an `<h1>`, ids are unique, and every visible text has a
//!   contrast ratio of at least 4.5:1 against its effective background, computed from computed
//!   styles with the WCAG 2 formula. (axe-core, MPL-2.0, would be licence-compatible; we chose
//!   not to vendor half a megabyte of JavaScript for the two checks the issue asks for.)

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, SemaphorePermit};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A phone-sized viewport (CSS pixels).
pub const MOBILE: (u32, u32) = (375, 812);
/// The User-Agent of a phone's browser (Chrome on Android).
pub const PHONE_UA: &str =
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36";

/// A desktop viewport.
pub const DESKTOP: (u32, u32) = (1280, 900);

static ONE_AT_A_TIME: Semaphore = Semaphore::const_new(1);

/// False (after a loud skip message) when Chromium is not installed; panics instead when
/// `METERPAY_REQUIRE_BROWSER=1`.
pub fn browser_available(test: &str) -> bool {
    let present = std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if present {
        return true;
    }
    if std::env::var("METERPAY_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!("{test} needs Chromium: METERPAY_REQUIRE_BROWSER=1 but {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)");
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n!!! SKIPPED {test}: it needs headless Chromium ({CHROMIUM}, {CHROMEDRIVER}). Install with `apt-get install chromium chromium-driver` (CI does).\n"
    );
    false
}

/// Where screenshots are written.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("test-artefacts")
}

/// One headless Chromium session.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    _turn: SemaphorePermit<'static>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Browser {
    /// Start Chromium with a `width`×`height` viewport, asking for Chinese pages (like most of
    /// our users' phones), or `None` (after a loud skip) if it is not installed.
    pub async fn start(test: &str, size: (u32, u32)) -> Option<Browser> {
        Self::start_with_language(test, size, "zh-CN,zh").await
    }

    /// Like [`Browser::start`], with the browser's `Accept-Language` set to `accept_language`.
    pub async fn start_with_language(test: &str, size: (u32, u32), accept_language: &str) -> Option<Browser> {
        Self::start_with(test, size, accept_language, None).await
    }

    /// A phone: the [`MOBILE`] viewport and a mobile browser's User-Agent ([`PHONE_UA`]), so
    /// pages that adapt to the device (the pay buttons) see a phone.
    pub async fn start_as_phone(test: &str) -> Option<Browser> {
        Self::start_with(test, MOBILE, "zh-CN,zh", Some(PHONE_UA)).await
    }

    /// Like [`Browser::start`] with the pages' JavaScript switched off (Chromium's content
    /// setting; the harness's own WebDriver scripts still run), to show a page works without it.
    pub async fn start_without_javascript(test: &str, size: (u32, u32)) -> Option<Browser> {
        Self::start_full(test, size, "zh-CN,zh", None, false).await
    }

    /// The general form: viewport, `Accept-Language`, and optionally the User-Agent.
    pub async fn start_with(
        test: &str,
        size: (u32, u32),
        accept_language: &str,
        user_agent: Option<&str>,
    ) -> Option<Browser> {
        Self::start_full(test, size, accept_language, user_agent, true).await
    }

    async fn start_full(
        test: &str,
        (width, height): (u32, u32),
        accept_language: &str,
        user_agent: Option<&str>,
        javascript: bool,
    ) -> Option<Browser> {
        if !browser_available(test) {
            return None;
        }
        let turn = ONE_AT_A_TIME.acquire().await.expect("semaphore open");
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        // chromedriver takes a moment to listen; wait for its port (bounded).
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--hide-scrollbars".into(),
            format!("--window-size={width},{height}"),
            format!("--lang={}", accept_language.split(',').next().unwrap_or("zh-CN")),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        if let Some(ua) = user_agent {
            args.push(format!("--user-agent={ua}"));
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": args,
                "prefs": {
                    "intl.accept_languages": accept_language,
                    // 1 allows the pages' scripts, 2 blocks them.
                    "profile.managed_default_content_settings.javascript": if javascript { 1 } else { 2 },
                },
            }),
        );
        // chromedriver speaks plain HTTP on loopback: no TLS stack needed.
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a WebDriver session with headless Chromium");
        let b = Browser {
            client,
            driver,
            _profile: profile,
            _turn: turn,
        };
        // The window size flag sets the outer size; make the viewport exactly what was asked.
        let (w, h) = b.viewport().await;
        if (w, h) != (width as i64, height as i64) {
            let (ow, oh): (i64, i64) = {
                let v = b
                    .client
                    .execute("return [window.outerWidth, window.outerHeight]", vec![])
                    .await
                    .expect("outer size");
                (v[0].as_i64().unwrap_or(0), v[1].as_i64().unwrap_or(0))
            };
            let nw = (width as i64 + (ow - w)).max(1) as u32;
            let nh = (height as i64 + (oh - h)).max(1) as u32;
            let _ = b.client.set_window_size(nw, nh).await;
        }
        Some(b)
    }

    /// The viewport's CSS size (`innerWidth`, `innerHeight`).
    pub async fn viewport(&self) -> (i64, i64) {
        let v = self
            .client
            .execute("return [window.innerWidth, window.innerHeight]", vec![])
            .await
            .expect("viewport size");
        (v[0].as_i64().unwrap_or(0), v[1].as_i64().unwrap_or(0))
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    pub async fn path(&self) -> String {
        self.client.current_url().await.expect("current url").path().to_string()
    }

    /// Type `text` into the element matching `css` (cleared first).
    pub async fn fill(&self, css: &str, text: &str) {
        let el = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("finding {css}: {e}"));
        el.clear().await.unwrap_or_else(|e| panic!("clearing {css}: {e}"));
        el.send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// Click the element matching `css` — a link or a submit button — and wait (bounded) until
    /// the new page has loaded. Panics if no new page comes (use [`Browser::click_in_page`]).
    pub async fn click(&self, css: &str) {
        // Mark the current document; the next one will not carry the mark.
        self.client
            .execute("window.__meterpay_old_page = true; return true", vec![])
            .await
            .expect("marking the page");
        self.click_in_page(css).await;
        for _ in 0..200 {
            if let Ok(v) = self
                .client
                .execute(
                    "return window.__meterpay_old_page === undefined && document.readyState === 'complete'",
                    vec![],
                )
                .await
            {
                if v == true {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("clicking {css} did not load a new page within 10 s");
    }

    /// Click the element matching `css` without waiting for a navigation.
    pub async fn click_in_page(&self, css: &str) {
        let el = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("finding {css}: {e}"));
        el.click().await.unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// The visible text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("finding {css}: {e}"))
            .text()
            .await
            .expect("element text")
    }

    /// True if some element matches `css`.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .expect("find_all")
            .is_empty()
    }

    /// Save a PNG of the viewport as `target/test-artefacts/{name}.png`; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    /// Run [`A11Y_CHECK`] in the page and return what it found wrong.
    pub async fn accessibility_problems(&self) -> Vec<String> {
        let v = self
            .client
            .execute(A11Y_CHECK, vec![])
            .await
            .expect("the accessibility check runs");
        v.as_array()
            .expect("a list of problems")
            .iter()
            .map(|p| p.as_str().unwrap_or("?").to_string())
            .collect()
    }

    /// Fail the test if the page has accessibility problems.
    pub async fn assert_accessible(&self, page: &str) {
        let problems = self.accessibility_problems().await;
        assert!(
            problems.is_empty(),
            "{page} has accessibility problems:\n  {}",
            problems.join("\n  ")
        );
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }
}

/// The in-page accessibility check: returns a list of problems (empty when the page passes).
pub const A11Y_CHECK: &str = r#"
const problems = [];
const visible = el => {
  const s = getComputedStyle(el);
  const r = el.getBoundingClientRect();
  return s.display !== 'none' && s.visibility !== 'hidden' && (r.width > 0 || r.height > 0);
};
if (!document.documentElement.lang) problems.push('<html> has no lang');
if (!document.title.trim()) problems.push('the page has no <title>');
if (!document.querySelector('main')) problems.push('no <main> landmark');
if (!document.querySelector('h1')) problems.push('no <h1>');
const ids = {};
for (const el of document.querySelectorAll('[id]')) {
  if (ids[el.id]) problems.push('duplicate id ' + el.id);
  ids[el.id] = true;
}
const textOf = id => { const e = document.getElementById(id); return e ? e.textContent : ''; };
for (const el of document.querySelectorAll('input, select, textarea, button')) {
  if (el.type === 'hidden' || !visible(el)) continue;
  let name = '';
  if (el.tagName === 'BUTTON' || ['submit', 'button', 'reset'].includes(el.type)) name = (el.textContent || el.value || '').trim();
  if (!name && el.labels && el.labels.length) name = Array.from(el.labels).map(l => l.textContent).join(' ').trim();
  if (!name) name = (el.getAttribute('aria-label') || '').trim();
  if (!name && el.getAttribute('aria-labelledby')) name = el.getAttribute('aria-labelledby').split(/\s+/).map(textOf).join(' ').trim();
  if (!name) problems.push('a control without a label: ' + el.outerHTML.slice(0, 120));
}
for (const img of document.querySelectorAll('img')) if (!img.hasAttribute('alt')) problems.push('an <img> without alt: ' + img.outerHTML.slice(0, 120));
for (const svg of document.querySelectorAll('svg[role="img"]')) {
  const n = (svg.getAttribute('aria-label') || (svg.getAttribute('aria-labelledby') || '').split(/\s+/).map(textOf).join(' ')).trim();
  if (!n) problems.push('an SVG image without a name');
}
for (const a of document.querySelectorAll('a[href]')) if (visible(a) && !(a.textContent.trim() || a.getAttribute('aria-label'))) problems.push('a link without text: ' + a.outerHTML.slice(0, 120));
const parse = c => {
  const m = (c || '').match(/rgba?\(([^)]+)\)/);
  if (!m) return null;
  const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
  return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
};
const over = (fg, bg) => [0, 1, 2].map(i => fg[i] * fg[3] + bg[i] * (1 - fg[3])).concat([1]);
const backgroundOf = el => {
  const layers = [];
  for (let e = el; e; e = e.parentElement) {
    const c = parse(getComputedStyle(e).backgroundColor);
    if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
  }
  let bg = [255, 255, 255, 1];
  for (let i = layers.length - 1; i >= 0; i--) bg = over(layers[i], bg);
  return bg;
};
const luminance = c => {
  const [r, g, b] = c.slice(0, 3).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const ratio = (a, b) => { const la = luminance(a), lb = luminance(b); return (Math.max(la, lb) + 0.05) / (Math.min(la, lb) + 0.05); };
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
const seen = new Set();
while (walker.nextNode()) {
  const t = walker.currentNode;
  const el = t.parentElement;
  if (!t.textContent.trim() || !el || seen.has(el) || !visible(el)) continue;
  if (el.closest('title, desc, style, script')) continue;
  seen.add(el);
  const s = getComputedStyle(el);
  const inSvg = !!el.closest('svg');
  let fg = parse(inSvg ? s.fill : s.color);
  if (!fg) continue;
  const bg = backgroundOf(inSvg ? el.closest('svg') : el);
  fg = over(fg, bg);
  const r = ratio(fg, bg);
  if (r < 4.5) problems.push('contrast ' + r.toFixed(2) + ':1 (< 4.5:1) for "' + t.textContent.trim().slice(0, 40) + '": ' + (inSvg ? s.fill : s.color) + ' on rgb(' + bg.slice(0, 3).map(Math.round).join(', ') + ')');
}
return problems;
"#;
