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

/// A request-level GraphQL error with its `extensions.code`, for refusals made before a document
/// runs (its shape, persisted documents), where no resolver can return an [`AppError`].
pub fn request_error(code: &str, message: impl Into<String>) -> async_graphql::ServerError {
    let mut error = async_graphql::ServerError::new(message, None);
    error
        .extensions
        .get_or_insert_with(Default::default)
        .set("code", code);
    error
}

/// Gives a GraphQL error its `extensions.code`. Errors raised by our code carry an [`AppError`] as
/// their source (async-graphql keeps it when `?` converts); internal ones are logged here and reach
/// the client only as "internal server error". Anything else was raised by async-graphql itself
/// while parsing, validating or coercing the request, which is the client's to fix.
pub fn set_graphql_code(error: &mut async_graphql::ServerError) {
    shorten_quoted(&mut error.message);
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
            cap_message(&mut error.message);
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
    cap_message(&mut error.message);
    let extensions = error.extensions.get_or_insert_with(Default::default);
    extensions.set("code", code);
    if let Some(secs) = retry_after {
        extensions.set("retryAfter", secs);
    }
}

/// Longest prefix of a client's input that an error message quotes, in characters.
pub const QUOTED_CHARS: usize = 32;

/// A client's input (an id, a cursor, a name) as an error message may quote it: whole when short,
/// else its first [`QUOTED_CHARS`] characters and "…". Counted in characters, so a character is
/// never cut in half. An error must not send the client's input back at full length: one request
/// quoting a megabyte-long variable twenty times would be answered with twenty megabytes.
pub fn quote(input: &str) -> std::borrow::Cow<'_, str> {
    match input.char_indices().nth(QUOTED_CHARS) {
        None => input.into(),
        Some((end, _)) => format!("{}…", &input[..end]).into(),
    }
}

/// Longest error message sent, in characters. Our own messages quote input through [`quote`];
/// this catches the rest (async-graphql's messages quote argument values and names in full, and
/// a request may repeat them in as many errors as it has fields).
const MAX_MESSAGE_CHARS: usize = 1000;

/// Quotes at most a short prefix of each double-quoted part of a message (async-graphql quotes
/// names and values so: `does not contain the value "…"`), as [`quote`] does. An escaped quote
/// inside may be taken for the end: the part is then cut shorter, never longer.
fn shorten_quoted(message: &mut String) {
    if message.len() <= QUOTED_CHARS || !message.contains('"') {
        return;
    }
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE_CHARS * 4));
    let mut rest = message.as_str();
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        let close = rest.find('"').unwrap_or(rest.len());
        out.push_str(&quote(&rest[..close]));
        rest = &rest[close..];
        if let Some(after) = rest.strip_prefix('"') {
            out.push('"');
            rest = after;
        }
    }
    out.push_str(rest);
    *message = out;
}

/// A message for the client, made short: each quoted part shortened as [`quote`] does, then the
/// whole cut to [`MAX_MESSAGE_CHARS`].
pub fn shorten_message(message: &mut String) {
    shorten_quoted(message);
    cap_message(message);
}

/// Cuts a message longer than [`MAX_MESSAGE_CHARS`] to that many characters and "…".
fn cap_message(message: &mut String) {
    if let Some((end, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
        message.truncate(end);
        message.push('…');
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_short_prefixes_cut_between_characters() {
        assert_eq!(quote("cnv_12"), "cnv_12");
        let exact = "é".repeat(QUOTED_CHARS);
        assert_eq!(quote(&exact), exact);
        let long = "é".repeat(QUOTED_CHARS + 1);
        assert_eq!(quote(&long), format!("{}…", "é".repeat(QUOTED_CHARS)));
        let mut message = format!(
            r#"enumeration type "Kind" does not contain the value "{}", nor "{}"#,
            "é".repeat(10_000),
            "x".repeat(100)
        );
        shorten_message(&mut message);
        assert_eq!(
            message,
            format!(
                r#"enumeration type "Kind" does not contain the value "{}…", nor "{}…"#,
                "é".repeat(QUOTED_CHARS),
                "x".repeat(QUOTED_CHARS)
            )
        );
        let mut message = "🙂".repeat(5000);
        cap_message(&mut message);
        assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(message.ends_with("🙂…"));
    }
}
