//! Authentication: the `Authorization: Bearer` token becomes a [`RequestContext`].

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, web};
use sba_application::RequestContext;

use super::error::ApiError;
use super::request_id::RequestId;
use crate::startup::AppState;

/// A request whose bearer token verified; handlers that take it are authenticated.
#[derive(Debug, Clone)]
pub struct Authenticated(pub RequestContext);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let request_id =
                req.extensions().get::<RequestId>().map(|id| id.as_str().to_owned()).unwrap_or_default();
            let fail = |error: ApiError| error.with_request_id(&request_id);
            let token = bearer_token(&req).map_err(fail)?;
            let state = req.app_data::<web::Data<AppState>>().ok_or_else(|| {
                fail(ApiError::internal(anyhow::anyhow!("application state is not registered")))
            })?;
            let principal = state.verifier.verify(token).await.map_err(|e| fail(e.into()))?;
            // Later stages (CORS, rate limits) decide by the caller's tenant.
            req.extensions_mut().insert(principal.clone());
            // The socket peer, not X-Forwarded-For: forwarded headers are client-controlled
            // unless a trusted proxy sets them.
            let ip = req.peer_addr().map(|addr| addr.ip().to_string());
            Ok(Self(RequestContext { principal, ip, request_id }))
        })
    }
}

fn bearer_token(req: &HttpRequest) -> Result<&str, ApiError> {
    let missing = || {
        ApiError::new(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "token_missing",
            "An `Authorization: Bearer <token>` header is required.",
        )
    };
    let value = req.headers().get(header::AUTHORIZATION).ok_or_else(missing)?;
    let text = value.to_str().map_err(|_| ApiError::from(sba_application::ports::TokenError::Invalid))?;
    let (scheme, token) = text.trim().split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(missing());
    }
    Ok(token.trim())
}
