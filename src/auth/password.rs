//! Argon2 password hashing, off the async runtime. Each hash takes ~19 MiB and a core for tens of
//! milliseconds, so at most one runs per core at a time: a burst of logins queues instead of
//! filling the blocking pool with hundreds of threads and gigabytes of hashing memory.
use std::sync::LazyLock;

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

static HASHING: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())));

async fn hashing_slot() -> AppResult<tokio::sync::SemaphorePermit<'static>> {
    HASHING
        .acquire()
        .await
        .map_err(|_| AppError::Internal("hashing semaphore closed".into()))
}

use crate::error::{AppError, AppResult};

/// Hashes a password with Argon2id and a random salt.
pub async fn hash(password: String) -> AppResult<String> {
    let _slot = hashing_slot().await?;
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| AppError::Internal(format!("hashing failed: {e}")))
    })
    .await
    .map_err(|e| AppError::Internal(format!("hashing task failed: {e}")))?
}

/// Checks a password against a stored hash. A malformed stored hash counts as a mismatch.
pub async fn verify(password: String, stored: String) -> AppResult<bool> {
    let _slot = hashing_slot().await?;
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&stored)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .map_err(|e| AppError::Internal(format!("verify task failed: {e}")))
}
