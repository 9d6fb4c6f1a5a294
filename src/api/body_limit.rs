//! Bounds request bodies. poem's own `SizeLimit` refuses every request
//! without a `Content-Length` (a plain GET included) with 411, so the bound
//! is enforced here instead: a declared length over the limit is refused
//! before anything is read, and an undeclared (chunked) body is cut off with
//! an error as soon as it passes the limit, so it never sits whole in memory.

use futures::StreamExt;
use poem::http::header::CONTENT_LENGTH;
use poem::{Body, Endpoint, IntoResponse, Middleware, Request, Response};

use super::error::ApiError;

pub struct BodyLimit {
    max_bytes: usize,
}

impl BodyLimit {
    pub fn new(max_bytes: usize) -> BodyLimit {
        BodyLimit { max_bytes }
    }
}

impl<E: Endpoint> Middleware<E> for BodyLimit {
    type Output = BodyLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        BodyLimitEndpoint {
            inner,
            max_bytes: self.max_bytes,
        }
    }
}

pub struct BodyLimitEndpoint<E> {
    inner: E,
    max_bytes: usize,
}

impl<E: Endpoint> Endpoint for BodyLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut request: Request) -> poem::Result<Response> {
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok());
        match declared {
            Some(length) if length > self.max_bytes as u64 => {
                return Err(ApiError::PayloadTooLarge { limit: self.max_bytes }.into());
            }
            Some(_) => {}
            None => {
                let max_bytes = self.max_bytes;
                let mut seen = 0usize;
                let stream = request.take_body().into_bytes_stream().map(move |chunk| {
                    let chunk = chunk?;
                    seen = seen.saturating_add(chunk.len());
                    if seen > max_bytes {
                        return Err(std::io::Error::other(format!(
                            "request body is larger than the limit of {max_bytes} bytes"
                        )));
                    }
                    Ok(chunk)
                });
                request.set_body(Body::from_bytes_stream(stream));
            }
        }
        Ok(self.inner.call(request).await?.into_response())
    }
}
