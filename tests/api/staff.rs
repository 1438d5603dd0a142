//! Test helpers for staff access, for any suite: create users, sign in over HTTP and make
//! cookie-authenticated requests with the session's CSRF token.
//!
//! ```ignore
//! let app = spawn_app().await;
//! add_user(&app.db, "fin", "finance").await;
//! let s = sign_in(&app, "fin", PASSWORD).await;
//! let r = s.post_form(&app, "/staff/recon/resolve", &[("reason", "ok")]).await;   // CSRF added
//! let r = s.get(&app, "/staff/recon").await;
//! ```

use chrono::Utc;
use meterpay::access::{hash_password, Role, UserName};
use meterpay::store::users::StaffUser;

use crate::helpers::{TestApp, TestDb};

/// The password [`add_user`] gives everyone.
pub const PASSWORD: &str = "correct horse battery";

/// Create a staff user with [`PASSWORD`].
pub async fn add_user(db: &TestDb, name: &str, role: &str) -> StaffUser {
    add_user_with(db, name, role, PASSWORD).await
}

pub async fn add_user_with(db: &TestDb, name: &str, role: &str, password: &str) -> StaffUser {
    let hash = hash_password(password).unwrap();
    db.store
        .create_staff_user(
            &UserName::parse(name).unwrap(),
            role.parse::<Role>().unwrap(),
            &hash,
            "test",
            Utc::now(),
        )
        .await
        .unwrap()
}

/// A client that does not follow redirects, so tests see them.
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `name=value` pairs of the response's `Set-Cookie` headers, with their attributes.
pub fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// The `name=value` of the cookie `name` set by the response, if any.
pub fn cookie_pair(r: &reqwest::Response, name: &str) -> Option<String> {
    set_cookies(r)
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| c.split(';').next().unwrap().to_string())
}

/// The `value` of the first `<input name="{field}" value="…">` in `html`.
pub fn input_value(html: &str, field: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{field}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let v = tag.split("value=\"").nth(1)?.split('"').next()?;
    Some(v.to_string())
}

/// The sign-in form's double-submit cookie and token.
pub async fn sign_in_form(app: &TestApp) -> (String, String) {
    let r = no_redirects()
        .get(format!("{}/staff/sign-in", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = cookie_pair(&r, "meterpay_signin").expect("the sign-in form sets its cookie");
    let html = r.text().await.unwrap();
    let token = input_value(&html, "csrf_token").expect("the sign-in form has a token field");
    (cookie, token)
}

/// Post the sign-in form (fetching it first for its token); returns the raw response.
pub async fn try_sign_in(app: &TestApp, name: &str, password: &str) -> reqwest::Response {
    try_sign_in_from(app, name, password, None).await
}

pub async fn try_sign_in_from(
    app: &TestApp,
    name: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let (cookie, token) = sign_in_form(app).await;
    let mut req = no_redirects()
        .post(format!("{}/staff/sign-in", app.address))
        .header("cookie", cookie)
        .form(&[
            ("name", name),
            ("password", password),
            ("csrf_token", &token),
            ("next", "/staff"),
        ]);
    if let Some(xff) = forwarded_for {
        req = req.header("x-forwarded-for", xff);
    }
    req.send().await.unwrap()
}

/// A signed-in browser, as far as HTTP goes: its session cookie and CSRF token.
#[derive(Debug, Clone)]
pub struct StaffSession {
    /// `name=value`, ready for a `Cookie` header.
    pub cookie: String,
    pub csrf: String,
}

/// Sign in and return the session; panics if sign-in fails.
pub async fn sign_in(app: &TestApp, name: &str, password: &str) -> StaffSession {
    let r = try_sign_in(app, name, password).await;
    assert_eq!(r.status(), 303, "sign-in of {name} redirects on success");
    let cookie = cookie_pair(&r, "__Host-meterpay_session")
        .or_else(|| cookie_pair(&r, "meterpay_session"))
        .expect("sign-in sets the session cookie");
    let mut s = StaffSession {
        cookie,
        csrf: String::new(),
    };
    let home = s.get(app, "/staff").await;
    assert_eq!(home.status(), 200);
    s.csrf = input_value(&home.text().await.unwrap(), "csrf_token").expect("signed-in pages carry the CSRF token");
    s
}

impl StaffSession {
    pub async fn get(&self, app: &TestApp, path: &str) -> reqwest::Response {
        no_redirects()
            .get(format!("{}{path}", app.address))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap()
    }

    /// Post a form with this session's CSRF token added.
    pub async fn post_form(&self, app: &TestApp, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        all.push(("csrf_token", &self.csrf));
        self.post_form_raw(app, path, &all).await
    }

    /// Post a form exactly as given (no CSRF token added).
    pub async fn post_form_raw(&self, app: &TestApp, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        no_redirects()
            .post(format!("{}{path}", app.address))
            .header("cookie", &self.cookie)
            .form(fields)
            .send()
            .await
            .unwrap()
    }

    /// A JSON request with the session cookie and, if `csrf`, the `x-csrf-token` header.
    pub async fn json(
        &self,
        app: &TestApp,
        method: reqwest::Method,
        path: &str,
        body: &serde_json::Value,
        csrf: bool,
    ) -> reqwest::Response {
        let mut req = no_redirects()
            .request(method, format!("{}{path}", app.address))
            .header("cookie", &self.cookie)
            .json(body);
        if csrf {
            req = req.header("x-csrf-token", &self.csrf);
        }
        req.send().await.unwrap()
    }

    pub async fn sign_out(&self, app: &TestApp) -> reqwest::Response {
        self.post_form(app, "/staff/sign-out", &[]).await
    }
}

/// Create an API token with `role` directly in the store.
pub async fn token(db: &TestDb, name: &str, role: &str) -> String {
    db.store.create_api_token(name, role, "test", Utc::now()).await.unwrap()
}
