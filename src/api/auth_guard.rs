//! Refuses clients that fail to authenticate too often: every 401 the
//! routes answer counts against the client's address, and an address over
//! the limit gets 429 with `Retry-After` before its request reaches a route
//! (see [`super::failed_auth`] for the counting and why a good key is
//! refused too).
//!
//! The address is the TCP peer's. Behind a reverse proxy that is the
//! proxy's for every client, and `X-Forwarded-For` is not trusted since any
//! client can write it: such a deployment limits failed authentications at
//! the proxy instead, or raises the limit here.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use poem::http::StatusCode;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

use super::error::ApiError;
use super::failed_auth::{source_of, FailedAuthLimiter, FailedAuthLimits};

pub struct FailedAuthGuard {
    limiter: Arc<Mutex<FailedAuthLimiter>>,
}

impl FailedAuthGuard {
    pub fn new(limits: FailedAuthLimits) -> FailedAuthGuard {
        FailedAuthGuard {
            limiter: Arc::new(Mutex::new(FailedAuthLimiter::new(limits))),
        }
    }
}

impl<E: Endpoint> Middleware<E> for FailedAuthGuard {
    type Output = FailedAuthGuardEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        FailedAuthGuardEndpoint {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

pub struct FailedAuthGuardEndpoint<E> {
    inner: E,
    limiter: Arc<Mutex<FailedAuthLimiter>>,
}

impl<E: Endpoint> Endpoint for FailedAuthGuardEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        // a peer without an IP address (a Unix socket) is local: not limited
        let Some(source) = request.remote_addr().as_socket_addr().map(|peer| source_of(peer.ip())) else {
            return Ok(self.inner.call(request).await?.into_response());
        };
        let refused = self
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .check(source, Instant::now());
        if let Err(retry_after) = refused {
            // whole seconds, rounded up, so a client that waits as told is let in
            let retry_after_secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            return Err(ApiError::TooManyFailedAuthentications { retry_after_secs }.into());
        }
        let answered = self.inner.call(request).await.map(IntoResponse::into_response);
        let status = match &answered {
            Ok(response) => response.status(),
            Err(error) => error.status(),
        };
        // only a failed authentication answers 401
        if status == StatusCode::UNAUTHORIZED {
            let now_refused = self
                .limiter
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record_failure(source, Instant::now());
            if now_refused {
                tracing::warn!(%source, "too many failed authentications: refusing the address for a while");
            }
        }
        answered
    }
}
