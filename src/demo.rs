//! `meterpay demo`: a community a new user can look at with no set-up. It creates the demo
//! community, its accounts and meters in the configured database (the embedded SQLite file by
//! default) from `fixtures/demo/community.toml`, compiled into the binary. It is idempotent: a
//! second run finds the community by code and reuses what is there.

use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ids::Utility;
use crate::domain::Quantity;
use crate::store::directory::{NewAccount, NewMeter};
use crate::store::Store;

const DEMO_DATA: &str = include_str!("../fixtures/demo/community.toml");
const ACTOR: &str = "demo";

#[derive(Debug, Deserialize)]
struct DemoFile {
    community: DemoCommunity,
    accounts: Vec<DemoAccount>,
}

#[derive(Debug, Deserialize)]
struct DemoCommunity {
    code: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct DemoAccount {
    #[serde(flatten)]
    account: NewAccount,
    meters: Vec<DemoMeter>,
}

#[derive(Debug, Deserialize)]
struct DemoMeter {
    meter_no: String,
    utility: Utility,
    digit_count: i32,
    multiplier: Quantity,
    model: Option<String>,
}

/// What the demo set up, for the summary it prints.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    pub community_code: String,
    pub community_name: String,
    /// False when a previous run had already created it.
    pub created: bool,
    pub accounts: usize,
    pub meters: usize,
    pub database: String,
    /// The demo's staff users `(name, role)`, all with [`DEMO_STAFF_PASSWORD`].
    pub staff_users: Vec<(String, String)>,
    /// The demo staff password (demo only: `serve` never creates users).
    pub staff_password: String,
}

/// The password of the demo's staff users. Printed in the demo summary; only the demo uses it.
pub const DEMO_STAFF_PASSWORD: &str = "meterpay-demo";

/// The demo's staff users: one per role a new user will want to try.
pub const DEMO_STAFF: &[(&str, crate::access::Role)] = &[
    ("demo-admin", crate::access::Role::Admin),
    ("demo-finance", crate::access::Role::Finance),
    ("demo-operator", crate::access::Role::Operator),
];

/// Create the demo staff users that are missing (an existing one is left as it is).
async fn seed_staff(store: &Store, now: chrono::DateTime<Utc>) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (name, role) in DEMO_STAFF {
        if store.staff_user(name).await?.is_none() {
            let hash = crate::access::hash_password_blocking(DEMO_STAFF_PASSWORD.to_string()).await?;
            let user = crate::access::UserName::parse(name).map_err(anyhow::Error::msg)?;
            store.create_staff_user(&user, *role, &hash, ACTOR, now).await?;
        }
        out.push((name.to_string(), role.as_str().to_string()));
    }
    Ok(out)
}

/// Create (or find) the demo community with its accounts and meters.
pub async fn seed(store: &Store) -> anyhow::Result<DemoSummary> {
    let file: DemoFile = toml::from_str(DEMO_DATA).map_err(|e| anyhow::anyhow!("reading the demo data: {e}"))?;
    let now = Utc::now();
    let (community, created) = store
        .ensure_community(&file.community.code, &file.community.name, ACTOR, now)
        .await?;
    let installed_on = NaiveDate::from_ymd_opt(2025, 1, 1).expect("valid date");
    let mut meters = 0;
    for a in &file.accounts {
        let account = match store.account_by_code(community.id, &a.account.code).await? {
            Some(existing) => existing,
            None => store.create_account(community.id, &a.account, ACTOR, now).await?,
        };
        for m in &a.meters {
            if store.meter_by_number(m.utility.as_str(), &m.meter_no).await?.is_none() {
                let new = NewMeter {
                    meter_no: m.meter_no.clone(),
                    utility: m.utility,
                    model: m.model.clone(),
                    digit_count: m.digit_count,
                    multiplier: m.multiplier,
                    installed_on,
                };
                store.install_meter(&account, &new, ACTOR, now).await?;
            }
            meters += 1;
        }
    }
    let staff_users = seed_staff(store, now).await?;
    Ok(DemoSummary {
        community_code: community.code,
        community_name: community.name,
        created,
        accounts: file.accounts.len(),
        meters,
        database: store.kind().as_str().to_string(),
        staff_users,
        staff_password: DEMO_STAFF_PASSWORD.to_string(),
    })
}
