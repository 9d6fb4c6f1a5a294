//! Every error leaves the API as `application/problem+json` (RFC 9457) with a
//! stable `code` that clients can branch on.

use actors::store::StoreError;
use actors::CommandError;
use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("a valid api key is required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    /// A read-only key on a route that sends a command.
    #[error("api key {key_id} is read only: it cannot send commands")]
    ReadOnlyKey { key_id: String },
    /// A key limited to knowledge bases on a route that reaches past them.
    #[error("api key {key_id} is limited to knowledge bases: it cannot {action}")]
    KnowledgeBaseScopedKey { key_id: String, action: String },
    /// Too many failed authentications from the client's address; nothing
    /// of the request was looked at.
    #[error("too many failed authentications from this address: retry in {retry_after_secs} s")]
    TooManyFailedAuthentications { retry_after_secs: u64 },
    /// A malformed request the route parsed itself (a query parameter).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// Something that was there and is not anymore (an expired upload).
    #[error("{message}")]
    Gone { code: &'static str, message: String },
    #[error("upload is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// A request body past the bound of its kind (see `body_limit`).
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A file whose declared content type is not one its extension allows.
    #[error("{0}")]
    ContentTypeMismatch(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    code: &'a str,
}

impl ApiError {
    pub fn not_found(what: &str, id: impl std::fmt::Display) -> ApiError {
        ApiError::NotFound(format!("{what} {id} not found"))
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            code: "invalid_input",
            message: message.into(),
        }
    }

    /// A query parameter that cannot be parsed: 400 `invalid_parameter`.
    pub fn bad_parameter(name: &str, reason: impl std::fmt::Display) -> ApiError {
        ApiError::BadRequest {
            code: "invalid_parameter",
            message: format!("query parameter {name}: {reason}"),
        }
    }

    /// A file name `FileName::parse` refuses: 400 `invalid_file_name`.
    pub fn invalid_file_name(reason: impl std::fmt::Display) -> ApiError {
        ApiError::BadRequest {
            code: "invalid_file_name",
            message: reason.to_string(),
        }
    }

    /// A multipart upload the route cannot take as sent (a missing or
    /// repeated field): 400 `invalid_upload`.
    pub fn invalid_upload(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code: "invalid_upload",
            message: message.into(),
        }
    }

    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(error.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::ReadOnlyKey { .. } | ApiError::KnowledgeBaseScopedKey { .. } => {
                StatusCode::FORBIDDEN
            }
            ApiError::TooManyFailedAuthentications { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Gone { .. } => StatusCode::GONE,
            ApiError::PayloadTooLarge { .. } | ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) | ApiError::ContentTypeMismatch(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound(_) => "not_found",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::ReadOnlyKey { .. } => "read_only_key",
            ApiError::KnowledgeBaseScopedKey { .. } => "knowledge_base_scoped_key",
            ApiError::TooManyFailedAuthentications { .. } => "too_many_failed_authentications",
            ApiError::BadRequest { code, .. }
            | ApiError::Invalid { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Gone { code, .. } => code,
            ApiError::PayloadTooLarge { .. } | ApiError::BodyTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_file_type",
            ApiError::ContentTypeMismatch(_) => "unsupported_content_type",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

pub fn problem_response(status: StatusCode, code: &str, detail: String) -> Response {
    let title = status.canonical_reason().unwrap_or("error");
    let body = Problem {
        kind: format!("urn:neurostash:problem:{code}"),
        title,
        status: status.as_u16(),
        detail,
        code,
    };
    let mut response = Response::builder()
        .status(status)
        .content_type("application/problem+json")
        .body(serde_json::to_vec(&body).unwrap_or_default());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert("retry-after", poem::http::HeaderValue::from_static("1"));
    }
    response
}

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        ApiError::status(self)
    }

    fn as_response(&self) -> Response {
        if let ApiError::Internal(detail) = self {
            // the detail may name internals: log it, answer generically
            tracing::error!(error = %detail, "request failed");
            return problem_response(self.status(), self.code(), "internal error".into());
        }
        let mut response = problem_response(self.status(), self.code(), self.to_string());
        if let ApiError::TooManyFailedAuthentications { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(poem::http::header::RETRY_AFTER, (*retry_after_secs).into());
        }
        response
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::Rejected(rejection) => {
                let code = rejection.code();
                let message = rejection.to_string();
                match code {
                    "not_found" => ApiError::NotFound(message),
                    "invalid_input" => ApiError::Invalid { code, message },
                    "upload_expired" => ApiError::Gone { code, message },
                    "no_pending_upload" => ApiError::NotFound(message),
                    _ => ApiError::Conflict { code, message },
                }
            }
            CommandError::Contended { .. } => ApiError::Conflict {
                code: "write_conflict",
                message: error.to_string(),
            },
            CommandError::Store(StoreError::Unavailable(_)) | CommandError::Unavailable(_) => {
                ApiError::Unavailable(error.to_string())
            }
            CommandError::Store(_) | CommandError::Corrupt { .. } => ApiError::internal(error),
        }
    }
}

/// Maps every error poem or poem-openapi raises by itself (bad JSON, a
/// missing header, an unknown route) to problem+json too.
pub async fn render_any_error(error: poem::Error) -> Response {
    if let Some(api_error) = error.downcast_ref::<ApiError>() {
        return poem::error::ResponseError::as_response(api_error);
    }
    let status = error.status();
    let code = match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    };
    let detail = match status {
        StatusCode::UNAUTHORIZED => "a valid api key is required".to_owned(),
        s if s.is_server_error() => {
            tracing::error!(%error, "request failed");
            "internal error".to_owned()
        }
        _ => error.to_string().to_lowercase(),
    };
    problem_response(status, code, detail).into_response()
}
