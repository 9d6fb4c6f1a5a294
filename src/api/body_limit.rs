//! Bounds request bodies. poem's own `SizeLimit` refuses every request
//! without a `Content-Length` (a plain GET included) with 411, so the bound
//! is enforced here instead: a declared length over the limit is refused
//! before anything is read, and an undeclared (chunked) body is cut off with
//! an error as soon as it passes the limit, so it never sits whole in memory.
//!
//! There are two bounds. A `multipart/form-data` body carries a file and
//! gets the upload bound (the upload route streams it, and counts the file
//! itself against `max_upload_bytes`); every other body gets the far
//! smaller one of JSON, so a route that parses its body whole (every JSON
//! route) never holds more than that. The choice goes by the declared
//! content type, not the route: a JSON route refuses a multipart body (415)
//! before reading any of it. A new route that takes raw bytes must be given
//! the upload bound here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use poem::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use poem::{Body, Endpoint, IntoResponse, Middleware, Request, Response};

use super::error::ApiError;

/// What a multipart body may carry besides the file: its boundaries and
/// part headers, and the form's other fields.
pub const FORM_OVERHEAD_BYTES: usize = 64 * 1024;

pub struct BodyLimit {
    upload_body_bytes: usize,
    json_body_bytes: usize,
}

impl BodyLimit {
    pub fn new(upload_body_bytes: usize, json_body_bytes: usize) -> BodyLimit {
        BodyLimit {
            upload_body_bytes,
            json_body_bytes,
        }
    }
}

impl<E: Endpoint> Middleware<E> for BodyLimit {
    type Output = BodyLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        BodyLimitEndpoint {
            inner,
            upload_body_bytes: self.upload_body_bytes,
            json_body_bytes: self.json_body_bytes,
        }
    }
}

pub struct BodyLimitEndpoint<E> {
    inner: E,
    upload_body_bytes: usize,
    json_body_bytes: usize,
}

/// The most of a refused body read and dropped after the refusal, and for
/// how long at most.
const LINGER_BYTES: usize = 1024 * 1024;
const LINGER: Duration = Duration::from_secs(2);

/// Reads and drops a little more of a refused body in the background, so
/// that the connection is not closed on bytes still arriving: the kernel
/// would answer them with a reset, which can destroy the refusal before the
/// client has read it (a lingering close, bounded in bytes and time).
fn linger(mut body: actors::objects::ByteStream) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut drained = 0usize;
        while drained < LINGER_BYTES {
            match tokio::time::timeout_at(deadline, body.next()).await {
                Ok(Some(Ok(chunk))) => drained += chunk.len(),
                _ => return,
            }
        }
    });
}

/// Whether the request declares a multipart form, the one body that may
/// carry a file.
fn is_multipart(request: &Request) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("multipart/form-data"))
}

/// Whether the request puts the bytes of a presigned upload to the API's
/// own upload URL: a raw body of up to an upload's size, whatever its
/// declared type (the route bounds it by the declared size).
fn is_raw_upload(request: &Request) -> bool {
    request.method() == poem::http::Method::PUT && request.uri().path().starts_with("/v1/uploads/")
}

impl<E: Endpoint> Endpoint for BodyLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut request: Request) -> poem::Result<Response> {
        let max_bytes = if is_multipart(&request) || is_raw_upload(&request) {
            self.upload_body_bytes
        } else {
            self.json_body_bytes
        };
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok());
        if declared.is_some_and(|length| length > max_bytes as u64) {
            linger(request.take_body().into_bytes_stream().boxed());
            return Err(ApiError::BodyTooLarge { limit: max_bytes }.into());
        }
        // the body stays reachable from here whatever the route does with
        // it, so that what the route leaves unread is lingered over below;
        // an undeclared (chunked) length is counted and cut at the bound
        let cut = Arc::new(AtomicBool::new(false));
        let unread: Arc<tokio::sync::Mutex<Option<actors::objects::ByteStream>>> = Arc::new(tokio::sync::Mutex::new(
            Some(request.take_body().into_bytes_stream().boxed()),
        ));
        let counted = declared.is_none();
        let stream = futures::stream::unfold((unread.clone(), 0usize), {
            let cut = cut.clone();
            move |(unread, seen)| {
                let cut = cut.clone();
                async move {
                    let mut slot = unread.lock().await;
                    let chunk = match slot.as_mut()?.next().await? {
                        Ok(chunk) => chunk,
                        Err(error) => return Some((Err(error), (unread.clone(), seen))),
                    };
                    let seen = seen.saturating_add(chunk.len());
                    if counted && seen > max_bytes {
                        cut.store(true, Ordering::Relaxed);
                        if let Some(rest) = slot.take() {
                            linger(rest);
                        }
                        let error = std::io::Error::other(format!(
                            "request body is larger than the limit of {max_bytes} bytes"
                        ));
                        drop(slot);
                        return Some((Err(error), (unread.clone(), seen)));
                    }
                    drop(slot);
                    Some((Ok(chunk), (unread, seen)))
                }
            }
        });
        request.set_body(Body::from_bytes_stream(stream));
        let result = self.inner.call(request).await.map(IntoResponse::into_response);
        // a route that answered without reading its whole body (a 415, a
        // 404 before the body is looked at) leaves the rest arriving
        if let Some(rest) = unread.lock().await.take() {
            linger(rest);
        }
        // the route saw only a failed read, which it reports as it can (a
        // JSON parse error, a broken multipart form): the failure was the
        // bound, and the client is told so. A route that succeeded anyway
        // did not need the rest, and its answer stands.
        if cut.load(Ordering::Relaxed) {
            let failed = match &result {
                Ok(response) => response.status().is_client_error() || response.status().is_server_error(),
                Err(_) => true,
            };
            if failed {
                return Err(ApiError::BodyTooLarge { limit: max_bytes }.into());
            }
        }
        result
    }
}
