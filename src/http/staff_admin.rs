//! Admin API for access: API tokens and staff users. Admins only; every change is audited with
//! the caller as actor.
//!
//! - `GET /api/v1/tokens` — every token (never the secret), newest first.
//! - `POST /api/v1/tokens` `{"name", "role"}` — `201 {"id", "name", "role", "token"}`; the token
//!   is shown this once.
//! - `DELETE /api/v1/tokens/{id}` — revoke (idempotent); `200` with the token's record.
//! - `GET /api/v1/users` — staff users (no hashes).
//! - `POST /api/v1/users` `{"name", "role", "password"}` — `201` with the user.
//! - `PUT /api/v1/users/{name}/role` `{"role"}` — change the role.
//! - `PUT /api/v1/users/{name}/password` `{"password"}` — set a new password; ends their sessions.
//! - `PUT /api/v1/users/{name}/disabled` `{"disabled": true|false}` — disabling ends their sessions.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, put};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Staff;
use super::error::ApiError;
use super::AppState;
use crate::access::{self, Role, UserName};
use crate::store::access::ApiTokenInfo;
use crate::store::users::StaffUser;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{name}/role", put(set_role))
        .route("/api/v1/users/{name}/password", put(set_password))
        .route("/api/v1/users/{name}/disabled", put(set_disabled))
}

fn role(s: &str) -> Result<Role, ApiError> {
    s.parse::<Role>().map_err(ApiError::BadRequest)
}

async fn list_tokens(State(state): State<AppState>, staff: Staff) -> Result<Json<Vec<ApiTokenInfo>>, ApiError> {
    staff.require(&["admin"])?;
    Ok(Json(state.store.list_api_tokens().await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: String,
}

async fn create_token(
    State(state): State<AppState>,
    staff: Staff,
    Json(body): Json<NewToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    staff.require(&["admin"])?;
    let role = role(&body.role)?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(ApiError::BadRequest("a token name has 1 to 64 characters".into()));
    }
    let token = state
        .store
        .create_api_token(name, role.as_str(), &staff.actor(), Utc::now())
        .await?;
    let owner = state
        .store
        .token_owner(&token)
        .await?
        .ok_or_else(|| ApiError::Unexpected(anyhow::anyhow!("the new token was not found")))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": owner.id, "name": owner.name, "role": owner.role, "token": token})),
    ))
}

async fn revoke_token(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<i64>,
) -> Result<Json<ApiTokenInfo>, ApiError> {
    staff.require(&["admin"])?;
    Ok(Json(
        state.store.revoke_api_token(id, &staff.actor(), Utc::now()).await?,
    ))
}

async fn list_users(State(state): State<AppState>, staff: Staff) -> Result<Json<Vec<StaffUser>>, ApiError> {
    staff.require(&["admin"])?;
    Ok(Json(state.store.list_staff_users().await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    role: String,
    password: String,
}

async fn create_user(
    State(state): State<AppState>,
    staff: Staff,
    Json(body): Json<NewUser>,
) -> Result<(StatusCode, Json<StaffUser>), ApiError> {
    staff.require(&["admin"])?;
    let name = UserName::parse(&body.name).map_err(ApiError::BadRequest)?;
    let role = role(&body.role)?;
    access::check_new_password(&name, &body.password).map_err(ApiError::BadRequest)?;
    let hash = access::hash_password_blocking(body.password).await?;
    let user = state
        .store
        .create_staff_user(&name, role, &hash, &staff.actor(), Utc::now())
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetRole {
    role: String,
}

async fn set_role(
    State(state): State<AppState>,
    staff: Staff,
    Path(name): Path<String>,
    Json(body): Json<SetRole>,
) -> Result<Json<StaffUser>, ApiError> {
    staff.require(&["admin"])?;
    let role = role(&body.role)?;
    Ok(Json(
        state
            .store
            .set_staff_role(&name, role, &staff.actor(), Utc::now())
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPassword {
    password: String,
}

async fn set_password(
    State(state): State<AppState>,
    staff: Staff,
    Path(name): Path<String>,
    Json(body): Json<SetPassword>,
) -> Result<StatusCode, ApiError> {
    staff.require(&["admin"])?;
    let user = UserName::parse(&name).map_err(ApiError::BadRequest)?;
    access::check_new_password(&user, &body.password).map_err(ApiError::BadRequest)?;
    let hash = access::hash_password_blocking(body.password).await?;
    state
        .store
        .set_staff_password(&name, &hash, None, &staff.actor(), Utc::now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetDisabled {
    disabled: bool,
}

async fn set_disabled(
    State(state): State<AppState>,
    staff: Staff,
    Path(name): Path<String>,
    Json(body): Json<SetDisabled>,
) -> Result<Json<StaffUser>, ApiError> {
    staff.require(&["admin"])?;
    Ok(Json(
        state
            .store
            .set_staff_disabled(&name, body.disabled, &staff.actor(), Utc::now())
            .await?,
    ))
}
