//! The one error type of the server, and the only place that maps errors to `extensions.code`.
use sea_orm::DbErr;

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    ResyncRequired(String),
    /// A `Range` header that does not fit the file (HTTP 416); carries the file's size.
    #[error("the requested range is not satisfiable")]
    RangeNotSatisfiable(u64),
    #[error("internal server error")]
    Database(#[from] DbErr),
    #[error("internal server error")]
    Storage(#[from] object_store::Error),
    #[error("internal server error")]
    Internal(String),
}

/// Shorthand for results in the domain and transport layers.
pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    /// The machine-readable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Unauthenticated(_) => "UNAUTHENTICATED",
            AppError::Forbidden(_) => "FORBIDDEN",
            AppError::NotFound(_) => "NOT_FOUND",
            AppError::BadInput(_) | AppError::RangeNotSatisfiable(_) => "BAD_USER_INPUT",
            AppError::Conflict(_) => "CONFLICT",
            AppError::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            AppError::RateLimited { .. } => "RATE_LIMITED",
            AppError::ResyncRequired(_) => "RESYNC_REQUIRED",
            AppError::Database(_) | AppError::Storage(_) | AppError::Internal(_) => {
                "INTERNAL_SERVER_ERROR"
            }
        }
    }

    /// The HTTP status for routes outside GraphQL (file downloads).
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            AppError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::BadInput(_) | AppError::ResyncRequired(_) => StatusCode::BAD_REQUEST,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            AppError::Database(_) | AppError::Storage(_) | AppError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// Shorthand for a NOT_FOUND about a kind of thing.
    pub fn not_found(what: &str) -> Self {
        AppError::NotFound(format!("{what} not found"))
    }

    /// Shorthand for BAD_USER_INPUT.
    pub fn bad_input(message: impl Into<String>) -> Self {
        AppError::BadInput(message.into())
    }

    fn log_if_internal(&self) {
        match self {
            AppError::Database(err) => tracing::error!(error = %err, "database error"),
            AppError::Storage(err) => tracing::error!(error = %err, "object store error"),
            AppError::Internal(err) => tracing::error!(error = %err, "internal error"),
            _ => {}
        }
    }
}

/// Gives a GraphQL error its `extensions.code`. Errors raised by our code carry an [`AppError`] as
/// their source (async-graphql keeps it when `?` converts); internal ones are logged here and reach
/// the client only as "internal server error". Anything else was raised by async-graphql itself
/// while parsing, validating or coercing the request, which is the client's to fix.
pub fn set_graphql_code(error: &mut async_graphql::ServerError) {
    let mut retry_after = None;
    let code = match error.source::<AppError>() {
        Some(app) => {
            app.log_if_internal();
            if let AppError::RateLimited {
                retry_after_secs, ..
            } = app
            {
                retry_after = Some(*retry_after_secs);
            }
            app.code()
        }
        None if error
            .extensions
            .as_ref()
            .is_some_and(|ext| ext.get("code").is_some()) =>
        {
            return;
        }
        None if error.message.contains("stack limit reached") => {
            // The parser gave up on nesting deeper than its stack allows; its message would
            // repeat the whole query back.
            error.message = "the query is nested too deep".into();
            "QUERY_TOO_COMPLEX"
        }
        None if error.message.contains("too complex")
            || error.message.contains("nested too deep")
            || error.message.contains("recursion depth")
            || error.message.contains("number of directives") =>
        {
            "QUERY_TOO_COMPLEX"
        }
        None => {
            shorten_parse_error(error);
            "BAD_USER_INPUT"
        }
    };
    let extensions = error.extensions.get_or_insert_with(Default::default);
    extensions.set("code", code);
    if let Some(secs) = retry_after {
        extensions.set("retryAfter", secs);
    }
}

/// Longest parser message passed on as is. Beyond it, only its last line (what was expected)
/// is kept: the parser quotes the offending line, which for a one-line query of a megabyte
/// would send the megabyte back.
const MAX_PARSE_MESSAGE: usize = 1000;

fn shorten_parse_error(error: &mut async_graphql::ServerError) {
    if error.message.len() <= MAX_PARSE_MESSAGE {
        return;
    }
    let last = error
        .message
        .lines()
        .rev()
        .map(|l| l.trim().trim_start_matches('=').trim())
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut short = format!("the query could not be parsed: {last}");
    if short.len() > MAX_PARSE_MESSAGE {
        let mut end = MAX_PARSE_MESSAGE;
        while !short.is_char_boundary(end) {
            end -= 1;
        }
        short.truncate(end);
    }
    error.message = short;
}

impl axum::response::IntoResponse for AppError {
    fn into_response(self) -> axum::response::Response {
        self.log_if_internal();
        let body = serde_json::json!({
            "errors": [{ "message": self.to_string(), "extensions": { "code": self.code() } }]
        });
        let mut response = (self.status(), axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            // RFC 9110: a 416 says how big the representation is.
            AppError::RangeNotSatisfiable(size) => {
                if let Ok(value) = format!("bytes */{size}").parse() {
                    headers.insert(axum::http::header::CONTENT_RANGE, value);
                }
            }
            AppError::Unauthenticated(_) => {
                headers.insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer"),
                );
            }
            _ => {}
        }
        response
    }
}

/// Whether a database error is a unique-constraint violation (a lost race with a concurrent insert).
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}
