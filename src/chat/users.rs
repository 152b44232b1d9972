//! Accounts: registration, login, logout and lookup.
use std::collections::HashMap;

use entity::user;

use super::pagination::Page;
use crate::{
    auth::{password, tokens},
    error::{AppError, AppResult, is_unique_violation},
    store::{Store, users},
    text,
};

/// A valid username: 3–32 characters of letters, digits, `_`, `.`, `-`, starting with a letter or
/// digit. Unique regardless of case.
#[derive(Debug, Clone)]
pub struct Username(String);

impl Username {
    /// Parses a username as typed.
    pub fn parse(raw: &str) -> AppResult<Self> {
        let raw = raw.trim();
        let len = raw.chars().count();
        if !(3..=32).contains(&len) {
            return Err(AppError::bad_input("username must be 3 to 32 characters"));
        }
        if !raw.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(AppError::bad_input(
                "username may contain letters, digits, `_`, `.` and `-`, and must start with a letter or digit",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The case-folded form that uniqueness is decided on.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

/// A password strong enough to accept: 8–128 characters, with at least one letter and one digit or
/// symbol, and not the username itself.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Parses a new password for a user.
    pub fn parse(raw: &str, username: &Username) -> AppResult<Self> {
        let len = raw.chars().count();
        if len < 8 {
            return Err(AppError::bad_input(
                "password must be at least 8 characters",
            ));
        }
        if len > 128 {
            return Err(AppError::bad_input(
                "password must be at most 128 characters",
            ));
        }
        let has_letter = raw.chars().any(char::is_alphabetic);
        let has_other = raw.chars().any(|c| !c.is_alphabetic());
        if !has_letter || !has_other {
            return Err(AppError::bad_input(
                "password must mix letters with digits or symbols",
            ));
        }
        if raw.to_lowercase().contains(&username.key()) {
            return Err(AppError::bad_input(
                "password must not contain the username",
            ));
        }
        Ok(Self(raw.to_owned()))
    }
}

/// A display name: 1–64 characters after trimming, with no control, bidirectional or invisible
/// character (see [`crate::text`]): refused rather than cleaned, so that what others see is what
/// the user typed.
pub fn parse_display_name(raw: Option<&str>, username: &Username) -> AppResult<String> {
    let name = raw.map(str::trim).unwrap_or(&username.0);
    let len = name.chars().count();
    if !(1..=64).contains(&len) {
        return Err(AppError::bad_input(
            "displayName must be 1 to 64 characters",
        ));
    }
    if let Some(found) = text::first_unwanted(name, text::unwanted_in_name) {
        return Err(AppError::bad_input(text::describe("displayName", found)));
    }
    Ok(name.to_owned())
}

/// Creates an account and signs it in.
pub async fn register(
    store: &Store,
    username: &str,
    password: &str,
    display_name: Option<&str>,
    token_ttl_secs: u64,
) -> AppResult<(user::Model, String)> {
    let username = Username::parse(username)?;
    let password = Password::parse(password, &username)?;
    let display_name = parse_display_name(display_name, &username)?;
    if find_by_username(store, &username).await?.is_some() {
        return Err(AppError::Conflict("that username is taken".into()));
    }
    let password_hash = password::hash(password.0).await?;
    let new = users::NewUser {
        username_key: username.key(),
        username: username.0,
        display_name,
        password_hash,
    };
    store
        .write(move |txn| {
            let new = new.clone();
            Box::pin(async move {
                let user = users::insert(txn, new).await.map_err(|err| {
                    if is_unique_violation(&err) {
                        AppError::Conflict("that username is taken".into())
                    } else {
                        err.into()
                    }
                })?;
                let token = tokens::issue(txn, user.id, token_ttl_secs).await?;
                Ok(((user, token), Vec::new()))
            })
        })
        .await
}

/// Changes a user's password after checking the current one, and signs out every other session
/// (a thief holding one of them loses it); the session `keep` (the one asking) stays.
pub async fn change_password(
    store: &Store,
    user_id: i64,
    keep: i64,
    current: &str,
    new: &str,
) -> AppResult<()> {
    let user = find(store, user_id)
        .await?
        .ok_or(AppError::Unauthenticated("the account no longer exists"))?;
    let new = Password::parse(new, &Username(user.username.clone()))?;
    if !password::verify(current.to_owned(), user.password_hash.clone()).await? {
        return Err(AppError::bad_input(
            "currentPassword is not the current password",
        ));
    }
    let hash = password::hash(new.0).await?;
    let checked = user.password_hash;
    store
        .write(move |txn| {
            let (hash, checked) = (hash.clone(), checked.clone());
            Box::pin(async move {
                // Only if the password is still the one checked: of two changes at once, one wins.
                if !users::replace_password_hash(txn, user_id, &checked, hash).await? {
                    return Err(AppError::Conflict(
                        "the password was changed at the same time; try again".into(),
                    ));
                }
                tokens::revoke_others(txn, user_id, keep).await?;
                Ok(((), Vec::new()))
            })
        })
        .await
}

/// Signs a user in. Unknown users and wrong passwords get the same answer, after the same work.
pub async fn login(
    store: &Store,
    username: &str,
    password: &str,
    token_ttl_secs: u64,
) -> AppResult<(user::Model, String)> {
    const REFUSED: AppError = AppError::Unauthenticated("invalid username or password");
    let found = match Username::parse(username) {
        Ok(name) => find_by_username(store, &name).await?,
        Err(_) => None,
    };
    let stored = found.as_ref().map(|u| u.password_hash.clone()).unwrap_or_else(|| {
        // A valid hash of nothing anyone knows, so that unknown users cost as much as known ones.
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$4M9YqkzYfH3xKDWd4l9Ck1UZhM4bHy8mS6zB3Pq1l0g".into()
    });
    let ok = password::verify(password.to_owned(), stored).await?;
    // The name tried, never the password; cut short so the log cannot be flooded through it.
    let tried: String = username.trim().chars().take(64).collect();
    match found {
        Some(user) if ok => {
            let user_id = user.id;
            let token = store
                .write(move |txn| {
                    Box::pin(async move {
                        Ok((
                            tokens::issue(txn, user_id, token_ttl_secs).await?,
                            Vec::new(),
                        ))
                    })
                })
                .await?;
            super::audit::record_or_log(store, Some(user.id), "login.succeeded", Some(tried)).await;
            Ok((user, token))
        }
        _ => {
            super::audit::record_or_log(store, None, "login.failed", Some(tried)).await;
            Err(REFUSED)
        }
    }
}

async fn find_by_username(store: &Store, username: &Username) -> AppResult<Option<user::Model>> {
    users::find_by_key(store.reader(), &username.key()).await
}

/// One user by id.
pub async fn find(store: &Store, id: i64) -> AppResult<Option<user::Model>> {
    users::find(store.reader(), id).await
}

/// Users by id, for batching.
pub async fn by_ids(store: &Store, ids: &[i64]) -> AppResult<HashMap<i64, user::Model>> {
    users::by_ids(store.reader(), ids).await
}

/// Users whose username or display name contains `search` (case-insensitive), in id order.
pub async fn search(
    store: &Store,
    search: Option<&str>,
    after_id: Option<i64>,
    first: u64,
) -> AppResult<Page<user::Model>> {
    let mut pattern = None;
    if let Some(term) = search.map(str::trim).filter(|s| !s.is_empty()) {
        if term.chars().count() > 64 {
            return Err(AppError::bad_input("search must be at most 64 characters"));
        }
        pattern = Some(format!("%{}%", escape_like(&term.to_lowercase())));
    }
    let rows = users::search(store.reader(), pattern, after_id, first + 1).await?;
    Ok(Page::forward(rows, first, after_id.is_some()))
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_checked() {
        assert!(Username::parse("al").is_err());
        assert!(Username::parse("_alice").is_err());
        assert!(Username::parse("ali ce").is_err());
        assert!(Username::parse("alice<script>").is_err());
        assert_eq!(Username::parse(" Alice.B-2 ").unwrap().key(), "alice.b-2");
    }

    #[test]
    fn weak_passwords_are_refused() {
        let name = Username::parse("alice").unwrap();
        for weak in ["", "short1", "allletters", "12345678", "xxAlice123"] {
            assert!(Password::parse(weak, &name).is_err(), "{weak}");
        }
        assert!(Password::parse("correct-horse-9", &name).is_ok());
    }

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(escape_like("50%_a\\"), "50\\%\\_a\\\\");
    }
}
