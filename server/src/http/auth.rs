//! `/auth/v1`: sign-up, sign-in (password, anonymous), refresh, sign-out, the current user,
//! password recovery, email links and codes (`/otp`, `/verify`), the admin API, and
//! `/.well-known/jwks.json`. Handlers only translate between HTTP and
//! `auth::service::Auth`.

use std::{collections::HashMap, net::SocketAddr};

use axum::{
    extract::{ConnectInfo, Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::Value;
use uuid::Uuid;

use super::{
    body::{from_value, JsonBody},
    client_address,
    identity::Caller,
    HttpError, HttpState,
};
use crate::{
    auth::{
        email_token::TokenKind,
        service::{IssuedSession, LogoutScope, SignUpOutcome, UserUpdate, Verification},
    },
    protocol::{
        auth::{
            AdminUserRequest, Empty, OtpRequest, PasswordGrant, RecoverRequest, RefreshGrant,
            ResendRequest, Session, SignUpRequest, UpdateUserRequest, User, UserList,
            VerifyRequest,
        },
        ApiError, ErrorCode,
    },
    store::users::UserRow,
};

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/auth/v1/signup", post(sign_up))
        .route("/auth/v1/token", post(token))
        .route("/auth/v1/logout", post(logout))
        .route("/auth/v1/user", get(get_user).put(update_user))
        .route("/auth/v1/recover", post(recover))
        .route("/auth/v1/otp", post(otp))
        .route("/auth/v1/resend", post(resend))
        .route("/auth/v1/verify", get(verify_link).post(verify))
        .route("/auth/v1/admin/users", get(admin_list).post(admin_create))
        .route(
            "/auth/v1/admin/users/{id}",
            get(admin_get).put(admin_update).delete(admin_delete),
        )
        .route("/.well-known/jwks.json", get(jwks))
        .route("/auth/v1/.well-known/jwks.json", get(jwks))
}

type Params = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

fn query(params: Params) -> Result<HashMap<String, String>, HttpError> {
    params.map(|Query(q)| q).map_err(|_| {
        HttpError(ApiError::new(
            ErrorCode::BadRequest,
            "the query string is malformed",
        ))
    })
}

async fn sign_up(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    params: Params,
    JsonBody(body): JsonBody<SignUpRequest>,
) -> Result<Response, HttpError> {
    let params = query(params)?;
    let client = client_address(&state, &headers, peer);
    let redirect_to = params.get("redirect_to").map(String::as_str);
    let outcome = match (body.email, body.password) {
        (Some(email), Some(password)) => {
            state
                .auth
                .sign_up(&email, &password, body.data, client, redirect_to)
                .await
        }
        (None, None) => state
            .auth
            .sign_in_anonymous(body.data, client)
            .await
            .map(SignUpOutcome::Session),
        _ => return Err(HttpError(ApiError::new(
            ErrorCode::InvalidField,
            "email and password are required together (leave both out for an anonymous sign-in)",
        ))),
    }
    .map_err(ApiError::from)?;
    Ok(match outcome {
        SignUpOutcome::Session(issued) => Json(session(&state, issued)).into_response(),
        // gotrue's shape when confirmation is required: the user, no session.
        SignUpOutcome::ConfirmationSent(user) => {
            Json(wire_user(&state, &user, None)).into_response()
        }
    })
}

async fn recover(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    params: Params,
    JsonBody(body): JsonBody<RecoverRequest>,
) -> Result<Json<Empty>, HttpError> {
    let params = query(params)?;
    state
        .auth
        .recover(
            &body.email,
            client_address(&state, &headers, peer),
            params.get("redirect_to").map(String::as_str),
        )
        .await
        .map_err(ApiError::from)?;
    Ok(Json(Empty {}))
}

async fn otp(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    params: Params,
    JsonBody(body): JsonBody<OtpRequest>,
) -> Result<Json<Empty>, HttpError> {
    let params = query(params)?;
    state
        .auth
        .send_magic_link(
            &body.email,
            body.create_user.unwrap_or(true),
            body.data,
            client_address(&state, &headers, peer),
            params.get("redirect_to").map(String::as_str),
        )
        .await
        .map_err(ApiError::from)?;
    Ok(Json(Empty {}))
}

async fn resend(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    params: Params,
    JsonBody(body): JsonBody<ResendRequest>,
) -> Result<Json<Empty>, HttpError> {
    let params = query(params)?;
    if body.kind != "signup" {
        return Err(HttpError(ApiError::new(
            ErrorCode::InvalidField,
            "type must be signup (to resend an email change, request it again)",
        )));
    }
    state
        .auth
        .resend_confirmation(
            &body.email,
            client_address(&state, &headers, peer),
            params.get("redirect_to").map(String::as_str),
        )
        .await
        .map_err(ApiError::from)?;
    Ok(Json(Empty {}))
}

/// The token kinds a `type` accepts. `email` is gotrue's type for a code from either a
/// sign-up confirmation or a magic-link mail.
fn kinds_of(kind: &str) -> Result<Vec<TokenKind>, HttpError> {
    match kind {
        "email" => Ok(vec![TokenKind::Signup, TokenKind::MagicLink]),
        other => TokenKind::parse(other).map(|k| vec![k]).ok_or_else(|| {
            HttpError(ApiError::new(
                ErrorCode::InvalidField,
                "type must be signup, email, magiclink, recovery or email_change",
            ))
        }),
    }
}

async fn verify(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<VerifyRequest>,
) -> Result<Json<Session>, HttpError> {
    let kinds = kinds_of(&body.kind)?;
    let proof = match (body.token_hash, body.email, body.token) {
        (Some(hash), _, _) => Verification::Link(hash),
        (None, Some(email), Some(code)) => Verification::Code { email, code },
        _ => {
            return Err(HttpError(ApiError::new(
                ErrorCode::InvalidField,
                "send token_hash, or email and token",
            )))
        }
    };
    let (issued, _) = state
        .auth
        .verify(&kinds, proof, client_address(&state, &headers, peer))
        .await
        .map_err(ApiError::from)?;
    Ok(Json(session(&state, issued)))
}

/// `GET /auth/v1/verify?token=…&type=…&redirect_to=…`: the link in the mail. Redirects to
/// the (allowed) `redirect_to` with the session in the fragment, as gotrue does, or with
/// `error`, `error_code` and `error_description` there when the link is no good.
async fn verify_link(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, HttpError> {
    let params = query(params)?;
    let target = state
        .auth
        .redirect_target(params.get("redirect_to").map(String::as_str));
    let kind = params.get("type").cloned().unwrap_or_default();
    let kinds = kinds_of(&kind)?;
    let token = params.get("token").cloned().unwrap_or_default();
    let verified = state
        .auth
        .verify(
            &kinds,
            Verification::Link(token),
            client_address(&state, &headers, peer),
        )
        .await;
    let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    let fragment = match verified {
        Ok((issued, kind)) => format!(
            "access_token={}&expires_at={}&expires_in={}&refresh_token={}&token_type=bearer&type={}",
            issued.access_token,
            issued.expires_at,
            issued.expires_in,
            issued.refresh_token,
            kind.as_str()
        ),
        Err(e) => {
            let e = ApiError::from(e);
            format!(
                "error=access_denied&error_code={}&error_description={}",
                e.code.as_str(),
                enc(&e.message)
            )
        }
    };
    let location = format!("{}#{fragment}", target.split('#').next().unwrap_or(""));
    Ok((
        StatusCode::SEE_OTHER,
        [
            (axum::http::header::LOCATION, location),
            (axum::http::header::CACHE_CONTROL, "no-store".to_string()),
        ],
    )
        .into_response())
}

async fn token(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    params: Params,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Session>, HttpError> {
    let params = query(params)?;
    let issued = match params.get("grant_type").map(String::as_str) {
        Some("password") => {
            let grant: PasswordGrant = from_value(body)?;
            state
                .auth
                .sign_in_password(
                    &grant.email,
                    &grant.password,
                    client_address(&state, &headers, peer),
                )
                .await
        }
        Some("refresh_token") => {
            let grant: RefreshGrant = from_value(body)?;
            state.auth.refresh(&grant.refresh_token).await
        }
        _ => {
            return Err(HttpError(
                ApiError::new(
                    ErrorCode::BadRequest,
                    "grant_type must be password or refresh_token",
                )
                .with_hint("POST /auth/v1/token?grant_type=password"),
            ))
        }
    }
    .map_err(ApiError::from)?;
    Ok(Json(session(&state, issued)))
}

async fn logout(
    State(state): State<HttpState>,
    Caller(who): Caller,
    params: Params,
) -> Result<StatusCode, HttpError> {
    let scope = match query(params)?.get("scope").map(String::as_str) {
        None | Some("local") => LogoutScope::Local,
        Some("global") => LogoutScope::Global,
        Some("others") => LogoutScope::Others,
        Some(_) => {
            return Err(HttpError(ApiError::new(
                ErrorCode::BadRequest,
                "scope must be local, global or others",
            )))
        }
    };
    state
        .auth
        .logout(&who, scope)
        .await
        .map_err(ApiError::from)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_user(
    State(state): State<HttpState>,
    Caller(who): Caller,
) -> Result<Json<User>, HttpError> {
    let user = state
        .auth
        .current_user(&who)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(wire_user(&state, &user, None)))
}

async fn update_user(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    params: Params,
    Caller(who): Caller,
    JsonBody(body): JsonBody<UpdateUserRequest>,
) -> Result<Json<User>, HttpError> {
    let params = query(params)?;
    let update = UserUpdate {
        email: body.email,
        password: body.password,
        app_metadata: body.app_metadata,
        user_metadata: body.data,
    };
    let (user, pending) = state
        .auth
        .update_current_user(
            &who,
            update,
            client_address(&state, &headers, peer),
            params.get("redirect_to").map(String::as_str),
        )
        .await
        .map_err(ApiError::from)?;
    Ok(Json(wire_user(&state, &user, pending)))
}

async fn admin_list(
    State(state): State<HttpState>,
    Caller(who): Caller,
    params: Params,
) -> Result<Json<UserList>, HttpError> {
    let params = query(params)?;
    let number = |name: &str, default: i64| -> Result<i64, HttpError> {
        match params.get(name) {
            None => Ok(default),
            Some(v) => v.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                HttpError(ApiError::new(
                    ErrorCode::BadRequest,
                    format!("{name} must be a positive whole number"),
                ))
            }),
        }
    };
    let page = number("page", 1)?;
    let per_page = number("per_page", 50)?.min(1000);
    let (users, total) = state
        .auth
        .admin_list(&who, page, per_page)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(UserList {
        users: users.iter().map(|u| wire_user(&state, u, None)).collect(),
        total,
        page,
        per_page,
    }))
}

async fn admin_create(
    State(state): State<HttpState>,
    Caller(who): Caller,
    JsonBody(body): JsonBody<AdminUserRequest>,
) -> Result<Response, HttpError> {
    let user = state
        .auth
        .admin_create(&who, admin_update_of(body))
        .await
        .map_err(ApiError::from)?;
    Ok((StatusCode::CREATED, Json(wire_user(&state, &user, None))).into_response())
}

async fn admin_get(
    State(state): State<HttpState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Json<User>, HttpError> {
    let user = state
        .auth
        .admin_get(&who, user_id(&id)?)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(wire_user(&state, &user, None)))
}

async fn admin_update(
    State(state): State<HttpState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<AdminUserRequest>,
) -> Result<Json<User>, HttpError> {
    let user = state
        .auth
        .admin_update(&who, user_id(&id)?, admin_update_of(body))
        .await
        .map_err(ApiError::from)?;
    Ok(Json(wire_user(&state, &user, None)))
}

async fn admin_delete(
    State(state): State<HttpState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, HttpError> {
    state
        .auth
        .admin_delete(&who, user_id(&id)?)
        .await
        .map_err(ApiError::from)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn jwks(State(state): State<HttpState>) -> Json<Value> {
    Json(state.tokens.jwks())
}

/// The client's address: the TCP peer, or, behind a trusted proxy, the last address in the
/// proxy's header (the one the proxy itself added; earlier ones are client-supplied).
fn user_id(id: &str) -> Result<Uuid, HttpError> {
    Uuid::parse_str(id).map_err(|_| HttpError(ApiError::new(ErrorCode::NotFound, "no such user")))
}

fn admin_update_of(body: AdminUserRequest) -> UserUpdate {
    UserUpdate {
        email: body.email,
        password: body.password,
        app_metadata: body.app_metadata,
        user_metadata: body.user_metadata,
    }
}

fn session(state: &HttpState, issued: IssuedSession) -> Session {
    Session {
        user: wire_user(state, &issued.user, None),
        access_token: issued.access_token,
        token_type: "bearer".into(),
        expires_in: issued.expires_in,
        expires_at: issued.expires_at,
        refresh_token: issued.refresh_token,
    }
}

fn wire_user(state: &HttpState, user: &UserRow, new_email: Option<String>) -> User {
    let time = |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339();
    User {
        id: user.id.to_string(),
        aud: state.tokens.audience().to_string(),
        role: "authenticated".into(),
        email: user.email.clone(),
        is_anonymous: user.is_anonymous,
        app_metadata: user.app_metadata.clone(),
        user_metadata: user.user_metadata.clone(),
        created_at: time(&user.created_at),
        updated_at: time(&user.updated_at),
        last_sign_in_at: user.last_sign_in_at.as_ref().map(time),
        email_confirmed_at: user.email_confirmed_at.as_ref().map(time),
        confirmed_at: user.email_confirmed_at.as_ref().map(time),
        new_email,
    }
}
