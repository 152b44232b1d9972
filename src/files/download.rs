//! `GET` / `HEAD /files/{messageId}`: a message's file, streamed from the store.
//!
//! Who may fetch it: a member of the conversation (bearer token), or anyone holding the message's
//! signed `downloadUrl` until it expires and while the member it was made for (the `user` it
//! names, under the signature) is still a member. The answers:
//! - no credentials, or a dead token (and no signature): 401;
//! - a signature that is forged, tampered with (message, user or expiry) or expired: 403, decided
//!   before the database is asked, so it says nothing about whether the message exists;
//! - a member's token or a valid signature, but the message is gone, deleted or has no file, or the
//!   token's user (or the signed URL's) is not a member: 404 (outsiders, and members since
//!   removed, cannot tell a file they may not see from none).
//!
//! When both are present the signature is what counts: it is the narrower credential.
use async_graphql::ID;
use axum::{
    body::Body,
    extract::{Path as UrlPath, Query, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use entity::message;
use object_store::{GetOptions, GetRange, path::Path};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use crate::{
    AppState, auth,
    chat::messages,
    error::{AppError, AppResult},
    ids::{self, Kind},
};

/// The signed-URL parameters (all three or none).
#[derive(Debug, Default, Deserialize)]
pub struct SignedParams {
    user: Option<String>,
    expires: Option<String>,
    signature: Option<String>,
}

impl SignedParams {
    /// Whether the request presents a signed URL at all (even a broken one).
    fn present(&self) -> bool {
        self.user.is_some() || self.expires.is_some() || self.signature.is_some()
    }

    /// The user the URL was made for, if its signature is this server's and it has not expired.
    fn verified_user(&self, signing: &super::SigningKey, message_id: i64, now: i64) -> Option<i64> {
        let user_id = ids::decode(Kind::User, &ID(self.user.clone()?)).ok()?;
        let expires = self.expires.as_deref()?.parse::<i64>().ok()?;
        signing
            .verify(
                message_id,
                user_id,
                expires,
                self.signature.as_deref()?,
                now,
            )
            .then_some(user_id)
    }
}

/// The route handler.
pub async fn download(
    State(state): State<AppState>,
    UrlPath(raw_id): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
    params: Result<Query<SignedParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let params = params.map(|Query(p)| p).unwrap_or_default();
    match serve(&state, &raw_id, method == Method::HEAD, &headers, params).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

fn not_found() -> AppError {
    AppError::not_found("file")
}

async fn serve(
    state: &AppState,
    raw_id: &str,
    head_only: bool,
    headers: &HeaderMap,
    params: SignedParams,
) -> AppResult<Response> {
    // A malformed id names no file.
    let message_id = ids::decode(Kind::Message, &ID(raw_id.to_owned())).map_err(|_| not_found())?;
    let signed = params.present();
    // Whose access decides: the user a valid signature names, or the bearer token's.
    let user_id = if signed {
        params
            .verified_user(
                state.files.signing_key(),
                message_id,
                chrono::Utc::now().timestamp(),
            )
            .ok_or_else(|| {
                AppError::Forbidden("the download link is invalid or has expired".into())
            })?
    } else {
        let token = match headers.get(header::AUTHORIZATION) {
            None => None,
            Some(value) => Some(value.to_str().ok().and_then(auth::bearer).ok_or(
                AppError::Unauthenticated("the token is invalid, expired or revoked"),
            )?),
        };
        auth::authenticate(&state.db, &state.tokens, token)
            .await?
            .viewer()?
            .user_id
    };

    // A signed URL is a member's access lent to a browser: it ends when their membership does.
    let message = messages::visible_message(&state.chat.store, user_id, message_id)
        .await
        .map_err(|_| not_found())?;
    if message.deleted_at.is_some() {
        return Err(not_found());
    }
    let file = Attachment::of(&message).ok_or_else(not_found)?;
    if signed {
        let target = Some(ids::encode(Kind::Message, message.id).0);
        crate::chat::audit::record_or_log(&state.chat.store, None, "file.signed_download", target)
            .await;
    }

    let etag = format!("\"{}\"", file.sha256);
    let mut response_headers = file.headers(&etag);
    if let Some(wanted) = headers.get(header::IF_NONE_MATCH)
        && etag_matches(wanted, &etag)
    {
        return Ok((StatusCode::NOT_MODIFIED, response_headers).into_response());
    }
    // If-Range: a range is only honoured against the version the client already has part of.
    let range_applies = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    let range = match headers.get(header::RANGE) {
        Some(value) if range_applies => parse_range(value, file.size)?,
        _ => None,
    };
    let (status, start, end) = match range {
        Some((start, end)) => {
            response_headers.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {start}-{end}/{}", file.size)),
            );
            (StatusCode::PARTIAL_CONTENT, start, end)
        }
        None => (StatusCode::OK, 0, file.size - 1),
    };
    response_headers.insert(
        header::CONTENT_LENGTH,
        header_value(&(end - start + 1).to_string()),
    );
    if head_only {
        return Ok((status, response_headers).into_response());
    }
    let options = GetOptions {
        range: (status == StatusCode::PARTIAL_CONTENT).then_some(GetRange::Bounded(start..end + 1)),
        ..Default::default()
    };
    let result = match state
        .files
        .object_store()
        .get_opts(&Path::from(file.key), options)
        .await
    {
        Ok(result) => result,
        Err(object_store::Error::NotFound { .. }) => {
            // The row names an object the store no longer has (a delete racing this read).
            tracing::warn!(message_id, "stored file missing");
            return Err(not_found());
        }
        Err(err) => return Err(err.into()),
    };
    let body = Body::from_stream(result.into_stream());
    Ok((status, response_headers, body).into_response())
}

/// A message's file, as its row records it.
struct Attachment<'a> {
    key: &'a str,
    filename: &'a str,
    content_type: &'a str,
    size: u64,
    sha256: &'a str,
}

impl<'a> Attachment<'a> {
    fn of(message: &'a message::Model) -> Option<Self> {
        Some(Self {
            key: message.attachment_key.as_deref()?,
            filename: message.attachment_filename.as_deref().unwrap_or("file"),
            content_type: message
                .attachment_content_type
                .as_deref()
                .unwrap_or(super::kind::OCTET_STREAM),
            size: message
                .attachment_size
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0)?,
            sha256: message.attachment_sha256.as_deref()?,
        })
    }

    fn headers(&self, etag: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(self.content_type)
                .unwrap_or(HeaderValue::from_static(super::kind::OCTET_STREAM)),
        );
        headers.insert(
            header::CONTENT_DISPOSITION,
            header_value(&content_disposition(self.filename, self.content_type)),
        );
        headers.insert(header::ETAG, header_value(etag));
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        // Opened directly, an HTML or SVG file runs no script and reaches nothing of ours.
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        );
        // Access can end (the message deleted, the member removed): caches must ask again, which
        // the ETag makes cheap.
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-cache"),
        );
        headers
    }
}

fn header_value(text: &str) -> HeaderValue {
    // Every value built here is ASCII by construction; the fallback keeps a bug from panicking.
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static(""))
}

fn etag_matches(header: &HeaderValue, etag: &str) -> bool {
    header.to_str().is_ok_and(|list| {
        list.split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t == etag)
    })
}

/// RFC 5987 `attr-char`: what may stay unencoded in `filename*`.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `Content-Disposition` per RFC 6266: an ASCII `filename` for old clients, the exact name in
/// `filename*`. Media and PDF open in the browser; anything else is offered as a download.
pub fn content_disposition(filename: &str, content_type: &str) -> String {
    let inline = (content_type.starts_with("image/") && !content_type.starts_with("image/svg"))
        || content_type.starts_with("video/")
        || content_type.starts_with("audio/")
        || content_type == "application/pdf";
    let fallback: String = filename
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{}; filename=\"{fallback}\"; filename*=UTF-8''{}",
        if inline { "inline" } else { "attachment" },
        utf8_percent_encode(filename, ATTR_CHAR)
    )
}

/// Parses a `Range` header against a file of `size` bytes (never 0). `Ok(None)`: serve the whole
/// file (another unit, or several ranges, which we do not combine). A `bytes` range that is
/// malformed or lies outside the file is refused with 416 rather than guessed at.
pub fn parse_range(value: &HeaderValue, size: u64) -> AppResult<Option<(u64, u64)>> {
    let unsatisfiable = || AppError::RangeNotSatisfiable(size);
    let Ok(text) = value.to_str() else {
        return Err(unsatisfiable());
    };
    let Some(spec) = text.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (first, last) = spec.trim().split_once('-').ok_or_else(unsatisfiable)?;
    let number = |s: &str| s.trim().parse::<u64>().map_err(|_| unsatisfiable());
    let (start, end) = match (first.trim().is_empty(), last.trim().is_empty()) {
        // `-n`: the last n bytes.
        (true, false) => {
            let n = number(last)?;
            if n == 0 {
                return Err(unsatisfiable());
            }
            (size.saturating_sub(n), size - 1)
        }
        // `a-`: from a to the end.
        (false, true) => (number(first)?, size - 1),
        (false, false) => (number(first)?, number(last)?.min(size - 1)),
        (true, true) => return Err(unsatisfiable()),
    };
    if start >= size || start > end {
        return Err(unsatisfiable());
    }
    Ok(Some((start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str, size: u64) -> Result<Option<(u64, u64)>, u16> {
        parse_range(&HeaderValue::from_str(text).unwrap(), size).map_err(|e| e.status().as_u16())
    }

    #[test]
    fn ranges_are_parsed_and_clamped() {
        assert_eq!(range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=-500", 100), Ok(Some((0, 99))));
        assert_eq!(range("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(range("items=0-1", 100), Ok(None));
        assert_eq!(range("bytes=100-", 100), Err(416));
        assert_eq!(range("bytes=9-3", 100), Err(416));
        assert_eq!(range("bytes=x-3", 100), Err(416));
        assert_eq!(range("bytes=-0", 100), Err(416));
    }

    #[test]
    fn content_disposition_carries_an_ascii_fallback_and_the_exact_name() {
        assert_eq!(
            content_disposition("résumé \"v2\".pdf", "application/pdf"),
            "inline; filename=\"r_sum_ _v2_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v2%22.pdf"
        );
        assert!(content_disposition("a.svg", "image/svg+xml").starts_with("attachment;"));
    }
}
