//! Staff authentication for the API: `Authorization: Bearer <token>`, each token with a role.
//! Roles: `admin` (everything), `operator` (communities, meters, readings, bills), `finance`
//! (payments, reconciliation, refunds), `read_only` (reads).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::error::ApiError;
use super::AppState;

/// An authenticated staff member or API client.
#[derive(Debug, Clone)]
pub struct Staff {
    pub name: String,
    pub role: String,
}

impl Staff {
    /// The actor recorded in the audit log.
    pub fn actor(&self) -> String {
        format!("token:{}", self.name)
    }

    /// Refuse unless the role is one of `roles` (admin always passes).
    pub fn require(&self, roles: &[&str]) -> Result<(), ApiError> {
        if self.role == "admin" || roles.contains(&self.role.as_str()) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "role {} may not do this (needs {})",
                self.role,
                roles.join(" or ")
            )))
        }
    }
}

impl FromRequestParts<AppState> for Staff {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer <token>".into()))?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| ApiError::Unauthorized("Authorization must be a Bearer token".into()))?;
        let owner = state
            .store
            .token_owner(token.trim())
            .await?
            .ok_or_else(|| ApiError::Unauthorized("unknown or revoked token".into()))?;
        Ok(Staff {
            name: owner.name,
            role: owner.role,
        })
    }
}
