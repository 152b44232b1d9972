//! Opening the object store named by `STORAGE_URL`.
use std::sync::Arc;

use object_store::{
    ObjectStore, aws::AmazonS3Builder, local::LocalFileSystem, memory::InMemory,
    prefix::PrefixStore,
};

/// `file://dir` (relative or absolute; created if missing), `memory://` (lost on exit; for tests),
/// or `s3://bucket[/prefix]` configured by the standard `AWS_*` variables (`AWS_ENDPOINT` and
/// `AWS_ALLOW_HTTP=true` for an S3-compatible server).
pub fn from_url(url: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    if let Some(dir) = url.strip_prefix("file://") {
        anyhow::ensure!(!dir.is_empty(), "STORAGE_URL `file://` needs a directory");
        std::fs::create_dir_all(dir)?;
        return Ok(Arc::new(LocalFileSystem::new_with_prefix(dir)?));
    }
    if url == "memory://" || url == "memory:" {
        return Ok(Arc::new(InMemory::new()));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        anyhow::ensure!(!bucket.is_empty(), "STORAGE_URL `s3://` needs a bucket");
        let s3 = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()?;
        let prefix = prefix.trim_matches('/');
        return Ok(if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        });
    }
    anyhow::bail!("STORAGE_URL must start with file://, memory:// or s3://")
}
