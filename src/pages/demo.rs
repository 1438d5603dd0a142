//! The demo's resident pay link: `meterpay demo` prints it beside the staff sign-in, so a new
//! user can open the resident page at once.

use chrono::{Duration, Utc};

use crate::config::Config;
use crate::paylink::LinkPurpose;
use crate::store::Store;

/// The demo account whose pay link is printed (it has a sample bill with tiers).
pub const DEMO_RESIDENT_ACCOUNT: &str = "D-1-1-101";

/// `(account code, pay URL)` for the demo account in `community_code`, valid for
/// `reminders.pay_link_ttl_days`, at `base_url` (where the demo serves); `None` when the account
/// is not there.
pub async fn resident_pay_link(
    store: &Store,
    config: &Config,
    base_url: &str,
    community_code: &str,
) -> anyhow::Result<Option<(String, String)>> {
    let Some(c) = store.community_by_code(community_code).await? else {
        return Ok(None);
    };
    let Some(a) = store.account_by_code(c.id, DEMO_RESIDENT_ACCOUNT).await? else {
        return Ok(None);
    };
    let now = Utc::now();
    let signer = crate::dunning::outbox::link_signer(store, config, now).await?;
    let ttl = Duration::days(config.reminders.pay_link_ttl_days.max(1));
    let token = signer.token(a.id, LinkPurpose::Pay, now + ttl);
    Ok(Some((
        a.code,
        format!("{}/pay/{token}", base_url.trim_end_matches('/')),
    )))
}
