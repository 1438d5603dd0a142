//! Access: who a staff member is and what they may do.
//!
//! - **Roles** ([`Role`]): `admin` (everything), `operator` (communities, accounts, meters,
//!   readings, tariffs, bill runs), `finance` (payments, reconciliation, refunds, reports),
//!   `read_only` (reads). API tokens and staff users carry the same roles.
//! - **Passwords** are hashed with argon2id (the `argon2` crate's defaults: 19 MiB, 2 passes)
//!   into PHC strings; [`hash_password`] and [`verify_password`] are CPU-heavy, so callers on the
//!   async runtime run them with `spawn_blocking` ([`hash_password_blocking`],
//!   [`verify_password_blocking`]).
//! - **Sessions** are random 256-bit values in a cookie; the database keeps only their SHA-256
//!   (see [`crate::store::users`]). Each session has its own CSRF token.
//! - **Lock-out** ([`LockoutPolicy`]): too many failed sign-ins within a window lock out the user
//!   name, and separately the source address, until the oldest failure leaves the window. While
//!   locked, even the right password is refused, and the refusal is not counted again.
//!
//! The HTTP side (extractors, cookies, CSRF checks) is in [`crate::http::auth`].

use std::fmt;
use std::str::FromStr;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};

/// A staff role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Operator,
    Finance,
    ReadOnly,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Finance, Role::ReadOnly];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Finance => "finance",
            Role::ReadOnly => "read_only",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: use admin, operator, finance or read_only"))
    }
}

/// A staff user name: 1–64 characters of letters, digits, `.`, `_`, `-` or `@`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct UserName(String);

impl UserName {
    pub fn parse(s: &str) -> Result<UserName, String> {
        let s = s.trim();
        if s.is_empty() || s.chars().count() > 64 {
            return Err("a user name has 1 to 64 characters".into());
        }
        if !s
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
        {
            return Err("a user name has only letters, digits and . _ - @".into());
        }
        Ok(UserName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// Check a new password against the (deliberately simple) policy: long enough, not the name.
pub fn check_new_password(name: &UserName, password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!("a password has at least {MIN_PASSWORD_CHARS} characters"));
    }
    if password.eq_ignore_ascii_case(name.as_str()) {
        return Err("the password must not be the user name".into());
    }
    Ok(())
}

/// Hash a password into an argon2id PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    use rand::Rng;
    let salt = SaltString::encode_b64(&rand::rng().random::<[u8; 16]>()).map_err(|e| format!("making a salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing a password: {e}"))
}

/// True if `password` matches the PHC string `hash`. A malformed hash never matches.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// [`hash_password`] off the async runtime.
pub async fn hash_password_blocking(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))?
        .map_err(|e| anyhow::anyhow!(e))
}

/// [`verify_password`] off the async runtime. With `hash = None` (no such user) it verifies
/// against a fixed dummy hash, so an unknown name takes as long as a wrong password.
pub async fn verify_password_blocking(password: String, hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || match hash {
        Some(h) => verify_password(&password, &h),
        None => {
            let _ = verify_password(&password, dummy_hash());
            false
        }
    })
    .await
    .unwrap_or(false)
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("meterpay-dummy-password").unwrap_or_default())
}

/// A fresh random 256-bit value as 64 hex characters (session cookies, CSRF tokens).
pub fn random_token() -> String {
    use rand::Rng;
    hex::encode(rand::rng().random::<[u8; 32]>())
}

/// Compare two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// When repeated failures lock sign-in out.
#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    pub max_failures_per_user: u32,
    pub max_failures_per_source: u32,
    pub window: chrono::Duration,
}

impl LockoutPolicy {
    pub fn from_config(c: &crate::config::AccessConfig) -> LockoutPolicy {
        LockoutPolicy {
            max_failures_per_user: c.lockout_max_failures.max(1),
            max_failures_per_source: c.lockout_max_failures_per_source.max(1),
            window: chrono::Duration::seconds(c.lockout_window_secs.max(1)),
        }
    }

    /// Which lock, if any, applies given the recent failure counts.
    pub fn lock(&self, user_failures: i64, source_failures: i64) -> Option<Lock> {
        if user_failures >= i64::from(self.max_failures_per_user) {
            Some(Lock::User)
        } else if source_failures >= i64::from(self.max_failures_per_source) {
            Some(Lock::Source)
        } else {
            None
        }
    }
}

/// What a lock-out applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    User,
    Source,
}

impl Lock {
    pub fn as_str(self) -> &'static str {
        match self {
            Lock::User => "user",
            Lock::Source => "source",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_from_their_names_and_nothing_else() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("root".parse::<Role>().is_err());
        assert!("Admin".parse::<Role>().is_err());
    }

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterY", &h));
        assert!(!verify_password("correct horse battery", "not a hash"));
        let h2 = hash_password("correct horse battery").unwrap();
        assert_ne!(h, h2, "each hash has its own salt");
    }

    #[test]
    fn user_names_and_new_passwords_follow_the_policy() {
        assert!(UserName::parse("wang.li@ops").is_ok());
        assert!(UserName::parse("").is_err());
        assert!(UserName::parse("has space").is_err());
        assert!(UserName::parse(&"x".repeat(65)).is_err());
        let n = UserName::parse("operator1").unwrap();
        assert!(check_new_password(&n, "short").is_err());
        assert!(check_new_password(&n, "OPERATOR1").is_err());
        assert!(check_new_password(&n, "a long enough one").is_ok());
    }

    #[test]
    fn lockout_starts_at_the_configured_count_for_user_or_source() {
        let p = LockoutPolicy {
            max_failures_per_user: 3,
            max_failures_per_source: 10,
            window: chrono::Duration::minutes(15),
        };
        assert_eq!(p.lock(2, 9), None);
        assert_eq!(p.lock(3, 0), Some(Lock::User));
        assert_eq!(p.lock(0, 10), Some(Lock::Source));
    }

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
    }
}
