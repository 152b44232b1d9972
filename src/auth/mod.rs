//! Who is asking: passwords, bearer tokens, and resolving the viewer from an HTTP header or the
//! WebSocket `connection_init` payload.
pub mod cache;
pub mod password;
pub mod tokens;

use sea_orm::DatabaseConnection;

pub use cache::{Ended, TokenCache};

use crate::{
    AppState,
    error::{AppError, AppResult},
    events::{Envelope, Event},
};

/// An authenticated user, with the token they presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Viewer {
    pub user_id: i64,
    pub token_id: i64,
}

/// The outcome of looking at a request's credentials.
#[derive(Clone, Copy, Debug)]
pub enum Auth {
    /// No credentials were presented.
    Anonymous,
    /// A token was presented but is unknown, expired or revoked.
    Invalid,
    User(Viewer),
}

impl Auth {
    /// The viewer, or UNAUTHENTICATED.
    pub fn viewer(&self) -> AppResult<Viewer> {
        match self {
            Auth::User(viewer) => Ok(*viewer),
            Auth::Anonymous => Err(AppError::Unauthenticated(
                "authentication required: send `Authorization: Bearer <token>`",
            )),
            Auth::Invalid => Err(AppError::Unauthenticated(
                "the token is invalid, expired or revoked",
            )),
        }
    }
}

/// Extracts the token from an `Authorization` header value (`Bearer <token>`).
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Longest token looked up; anything longer is no token of ours.
const MAX_TOKEN_LEN: usize = 256;

/// Resolves an optional raw token to an [`Auth`], from the cache when this instance resolved the
/// token recently.
pub async fn authenticate(
    db: &DatabaseConnection,
    cache: &TokenCache,
    token: Option<&str>,
) -> AppResult<Auth> {
    let Some(token) = token else {
        return Ok(Auth::Anonymous);
    };
    if token.len() > MAX_TOKEN_LEN {
        return Ok(Auth::Invalid);
    }
    let key = tokens::key(token);
    let miss = match cache.get(&key) {
        Ok(viewer) => return Ok(Auth::User(viewer)),
        Err(miss) => miss,
    };
    Ok(match tokens::resolve(db, &key).await? {
        Some((viewer, expires_at)) => {
            cache.put(key, viewer, expires_at, miss);
            Auth::User(viewer)
        }
        None => Auth::Invalid,
    })
}

/// After sessions were revoked (committed): forgets them here at once and tells every instance,
/// so that no cache anywhere still accepts their tokens.
pub async fn end_sessions(state: &AppState, user_id: i64, ended: Ended) {
    state.tokens.forget(user_id, ended);
    let event = Event::SessionsEnded { user_id, ended };
    state.bus.publish(Envelope::new(vec![user_id], event)).await;
}

/// Reads the token from a `connection_init` payload: `{"authorization": "Bearer <token>"}` or
/// `{"token": "<token>"}` (key case ignored, also accepted under `headers`).
pub fn token_from_init_payload(payload: &serde_json::Value) -> Option<String> {
    let object = payload.as_object()?;
    let lookup = |object: &serde_json::Map<String, serde_json::Value>| {
        object.iter().find_map(|(key, value)| {
            let value = value.as_str()?;
            if key.eq_ignore_ascii_case("authorization") {
                bearer(value).map(str::to_owned)
            } else if key.eq_ignore_ascii_case("token") {
                Some(value.trim().to_owned()).filter(|t| !t.is_empty())
            } else {
                None
            }
        })
    };
    lookup(object).or_else(|| object.get("headers")?.as_object().and_then(lookup))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_is_parsed_leniently() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn init_payload_accepts_both_shapes() {
        let a = serde_json::json!({"authorization": "Bearer t1"});
        let b = serde_json::json!({"token": "t2"});
        let c = serde_json::json!({"headers": {"Authorization": "Bearer t3"}});
        assert_eq!(token_from_init_payload(&a).as_deref(), Some("t1"));
        assert_eq!(token_from_init_payload(&b).as_deref(), Some("t2"));
        assert_eq!(token_from_init_payload(&c).as_deref(), Some("t3"));
        assert_eq!(token_from_init_payload(&serde_json::json!({})), None);
        assert_eq!(token_from_init_payload(&serde_json::Value::Null), None);
    }
}
