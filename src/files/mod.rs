//! Files attached to messages: the object store behind `STORAGE_URL`, upload validation and
//! streaming, signed download URLs, the download route, and the orphan sweep.
//!
//! Consistency between the store and the database. A send validates the upload, writes the bytes
//! under a fresh key (`attachments/<uuid>`), then inserts the message in one transaction. If the
//! store fails, nothing is inserted. If the transaction fails, the object is deleted before the
//! error is returned. A crash (or a failed delete) between the two leaves an object that no
//! message names: at every start, [`Files::sweep_orphans`] deletes objects older than an hour that
//! no live message names. The hour keeps it from racing sends in flight on other instances. The
//! same sweep removes the bytes of deleted messages if deleting them right after the commit failed.
//! One consequence: a `STORAGE_URL` must belong to one deployment (one database).
pub mod download;
pub mod kind;
pub mod signing;
mod store;

use std::{collections::HashSet, sync::Arc, time::Duration};

use entity::message;
use futures_util::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart, path::Path};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

pub use kind::FileKind;
use kind::{Classified, DenyList};
pub use signing::SigningKey;

use crate::{
    config::Config,
    error::{AppError, AppResult},
    ids::{self, Kind},
};

/// Where attachments live inside the store.
const ATTACHMENTS: &str = "attachments";
/// Uploads up to this size go in one `put`; larger ones in parts of this size. 5 MiB is the
/// smallest part S3 accepts, and bounds what one upload holds in memory (times the parts in flight).
const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts of one upload being sent at the same time.
const PARTS_IN_FLIGHT: usize = 2;
/// How much is read from the spooled upload at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Objects younger than this are never swept: their send may still be committing elsewhere.
pub const SWEEP_GRACE: Duration = Duration::from_secs(3600);
/// Download URLs are handed out with an expiry rounded up to this many seconds, so that the same
/// URL comes back for a while and browsers can cache the file.
const URL_EXPIRY_STEP: i64 = 300;

/// The file service: the store, the rules, and the signing key.
pub struct Files {
    store: Arc<dyn ObjectStore>,
    signing: SigningKey,
    deny: DenyList,
    max_upload_bytes: u64,
    url_ttl_secs: i64,
    public_url: String,
}

/// The scheme and host (`https://chat.example.com`) a request came in on, for the links handed
/// back to it when `PALAVER_PUBLIC_URL` is not set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestOrigin(pub String);

impl RequestOrigin {
    /// The origin a request names: with `trust_forwarded`, the proxy's `Forwarded` header (or
    /// `X-Forwarded-Proto` / `X-Forwarded-Host`); else its `Host`, over `http` (the server speaks
    /// no TLS itself). None when no valid host is given: a host that is not a plain host and
    /// port (a path, user info, spaces) is never put into a link.
    pub fn from_headers(headers: &axum::http::HeaderMap, trust_forwarded: bool) -> Option<Self> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (mut scheme, mut host) = ("http".to_owned(), text("host").map(str::to_owned));
        if trust_forwarded {
            if let Some(forwarded) = text("forwarded") {
                // The first element is the one the client's request reached the first proxy with.
                let first = forwarded.split(',').next().unwrap_or_default();
                for pair in first.split(';') {
                    let Some((key, value)) = pair.trim().split_once('=') else {
                        continue;
                    };
                    let value = value.trim().trim_matches('"');
                    match key.trim().to_ascii_lowercase().as_str() {
                        "proto" => scheme = value.to_ascii_lowercase(),
                        "host" => host = Some(value.to_owned()),
                        _ => {}
                    }
                }
            } else {
                let first = |v: &str| v.split(',').next().unwrap_or_default().trim().to_owned();
                if let Some(proto) = text("x-forwarded-proto") {
                    scheme = first(proto).to_ascii_lowercase();
                }
                if let Some(forwarded_host) = text("x-forwarded-host") {
                    host = Some(first(forwarded_host));
                }
            }
        }
        let host = host?;
        let valid_host = !host.is_empty()
            && host.parse::<axum::http::uri::Authority>().is_ok()
            && !host.contains('@');
        if !valid_host || !matches!(scheme.as_str(), "http" | "https") {
            return None;
        }
        Some(RequestOrigin(format!("{scheme}://{host}")))
    }
}

/// An upload as the transport received it: the client's file name and the spooled bytes.
#[derive(Debug)]
pub struct IncomingFile {
    pub filename: String,
    pub content: std::fs::File,
}

/// An upload that passed validation and is ready to be stored.
#[derive(Debug)]
pub struct ValidFile {
    filename: String,
    classified: Classified,
    size: u64,
    content: tokio::fs::File,
}

impl ValidFile {
    /// The message kind the file makes.
    pub fn kind(&self) -> FileKind {
        self.classified.kind
    }
}

/// A file written to the store, with what the message row records about it.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub key: String,
    pub filename: String,
    pub content_type: String,
    pub kind: FileKind,
    pub size: i64,
    pub sha256: String,
}

impl Files {
    /// Opens the store named by the configuration and loads (or makes) the URL signing key.
    pub async fn open(config: &Config, db: &DatabaseConnection) -> anyhow::Result<Self> {
        let store = store::from_url(&config.storage_url)?;
        let signing = signing::load_or_create(db, config.url_signing_key.as_ref()).await?;
        Ok(Self {
            store,
            signing,
            deny: DenyList::new(&config.denied_extensions),
            max_upload_bytes: config.max_upload_bytes,
            url_ttl_secs: i64::try_from(config.download_url_ttl_secs).unwrap_or(i64::MAX / 4),
            public_url: config
                .public_url
                .as_deref()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_owned(),
        })
    }

    /// The store itself (the download route reads from it).
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The key download URLs are signed with.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// Checks an upload against the limits and the deny list and decides its kind, without
    /// storing anything: PAYLOAD_TOO_LARGE or BAD_USER_INPUT.
    pub async fn validate(&self, incoming: IncomingFile) -> AppResult<ValidFile> {
        let mut content = tokio::fs::File::from_std(incoming.content);
        let size = content.metadata().await.map_err(io_error)?.len();
        if size > self.max_upload_bytes {
            return Err(AppError::PayloadTooLarge(format!(
                "files may be at most {} bytes",
                self.max_upload_bytes
            )));
        }
        if size == 0 {
            return Err(AppError::bad_input("the file is empty"));
        }
        let filename = kind::sanitize_filename(&incoming.filename);
        let mut head = vec![0u8; kind::SNIFF_BYTES];
        let mut filled = 0;
        while filled < head.len() {
            let n = content.read(&mut head[filled..]).await.map_err(io_error)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        head.truncate(filled);
        content
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(io_error)?;
        let classified = kind::classify(&filename, &head, &self.deny)?;
        Ok(ValidFile {
            filename,
            classified,
            size,
            content,
        })
    }

    /// Streams a validated upload into the store under a fresh key, hashing it on the way.
    /// On failure nothing is left behind (a multipart upload is aborted).
    pub async fn put(&self, file: ValidFile) -> AppResult<StoredFile> {
        let key = format!("{ATTACHMENTS}/{}", uuid::Uuid::new_v4().simple());
        let path = Path::from(key.as_str());
        let ValidFile {
            filename,
            classified,
            size,
            mut content,
        } = file;
        let (written, sha256) = if size <= PART_SIZE as u64 {
            // Small enough to hold: one request instead of three.
            let mut bytes = Vec::with_capacity(size as usize);
            content.read_to_end(&mut bytes).await.map_err(io_error)?;
            let sha256 = hex::encode(Sha256::digest(&bytes));
            let written = bytes.len() as u64;
            self.store.put(&path, PutPayload::from(bytes)).await?;
            (written, sha256)
        } else {
            let upload = self.store.put_multipart(&path).await?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            match stream_parts(&mut content, &mut writer).await {
                Ok(done) => {
                    writer.finish().await?;
                    done
                }
                Err(err) => {
                    if let Err(abort) = writer.abort().await {
                        tracing::warn!(error = %abort, "aborting a multipart upload failed");
                    }
                    return Err(err);
                }
            }
        };
        if written != size {
            // The spool file is ours alone, so this is a bug, not a client error.
            self.remove(&key).await;
            return Err(AppError::Internal(format!(
                "upload changed size while stored ({size} → {written})"
            )));
        }
        Ok(StoredFile {
            key,
            filename,
            content_type: classified.content_type,
            kind: classified.kind,
            size: i64::try_from(size).unwrap_or(i64::MAX),
            sha256,
        })
    }

    /// Deletes an object, best effort: a failure is logged and left to the next orphan sweep.
    pub async fn remove(&self, key: &str) {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(err) => tracing::warn!(error = %err, key, "could not delete a stored file"),
        }
    }

    /// A signed URL for a message's file, made for `user_id` (the member who asked for it):
    /// valid for the configured time (rounded up), and only while that user is still a member of
    /// the message's conversation. Absolute: on `PALAVER_PUBLIC_URL`, else on the origin the
    /// request came in on; relative only when neither is known.
    pub fn download_url(
        &self,
        origin: Option<&RequestOrigin>,
        message_id: i64,
        user_id: i64,
        now: i64,
    ) -> String {
        let ahead = now.saturating_add(self.url_ttl_secs);
        let expires = ahead
            .div_euclid(URL_EXPIRY_STEP)
            .saturating_add(1)
            .saturating_mul(URL_EXPIRY_STEP);
        let signature = self.signing.signature(message_id, user_id, expires);
        let base = match origin {
            Some(origin) if self.public_url.is_empty() => origin.0.as_str(),
            _ => self.public_url.as_str(),
        };
        format!(
            "{base}/files/{}?user={}&expires={expires}&signature={signature}",
            ids::encode(Kind::Message, message_id).as_str(),
            ids::encode(Kind::User, user_id).as_str()
        )
    }

    /// Deletes stored attachments that no live message names and that are older than
    /// [`SWEEP_GRACE`]; returns how many went.
    pub async fn sweep_orphans(&self, db: &DatabaseConnection) -> AppResult<usize> {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(SWEEP_GRACE).unwrap_or(chrono::Duration::zero());
        let prefix = Path::from(ATTACHMENTS);
        let mut listing = self
            .store
            .list(Some(&prefix))
            .try_filter(|meta| std::future::ready(meta.last_modified < cutoff))
            .map_ok(|meta| meta.location.to_string())
            .try_chunks(500);
        let mut removed = 0;
        while let Some(chunk) = listing.next().await {
            let keys = chunk.map_err(|err| AppError::Internal(err.to_string()))?;
            let live: HashSet<String> = message::Entity::find()
                .select_only()
                .column(message::Column::AttachmentKey)
                .filter(message::Column::AttachmentKey.is_in(keys.iter().cloned()))
                .filter(message::Column::DeletedAt.is_null())
                .into_tuple::<Option<String>>()
                .all(db)
                .await?
                .into_iter()
                .flatten()
                .collect();
            for key in keys.into_iter().filter(|k| !live.contains(k)) {
                self.remove(&key).await;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Copies the spooled upload into a multipart writer in bounded pieces; returns the bytes written
/// and their SHA-256.
async fn stream_parts(
    content: &mut tokio::fs::File,
    writer: &mut WriteMultipart,
) -> AppResult<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut written = 0u64;
    loop {
        let n = content.read(&mut buf).await.map_err(io_error)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        // Waiting here keeps at most PARTS_IN_FLIGHT parts in memory while they upload.
        writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        writer.write(&buf[..n]);
        written += n as u64;
    }
    Ok((written, hex::encode(hasher.finalize())))
}

fn io_error(err: std::io::Error) -> AppError {
    AppError::Internal(format!("reading the uploaded file: {err}"))
}
