//! Opening the object store named by `STORAGE_URL`.
use std::sync::Arc;

use object_store::{
    ObjectStore, ObjectStoreScheme, local::LocalFileSystem, parse_url_opts, prefix::PrefixStore,
};
use url::Url;

/// `file://dir` (relative or absolute; created if missing), `memory://` (lost on exit; for tests),
/// or `s3://bucket[/prefix]` configured by the standard `AWS_*` variables (`AWS_ENDPOINT` and
/// `AWS_ALLOW_HTTP=true` for an S3-compatible server).
pub fn from_url(url: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    // A directory, not a URL object_store reads: in `file://data/files` (the default, relative to
    // the working directory) a URL parser takes `data` for a host.
    if let Some(dir) = url.strip_prefix("file://") {
        anyhow::ensure!(!dir.is_empty(), "STORAGE_URL `file://` needs a directory");
        std::fs::create_dir_all(dir)?;
        return Ok(Arc::new(LocalFileSystem::new_with_prefix(dir)?));
    }
    let refused = || anyhow::anyhow!("STORAGE_URL must start with file://, memory:// or s3://");
    let parsed = Url::parse(url).map_err(|_| refused())?;
    match ObjectStoreScheme::parse(&parsed) {
        Ok((ObjectStoreScheme::Memory | ObjectStoreScheme::AmazonS3, _)) => {}
        _ => return Err(refused()),
    }
    // The `AWS_*` variables, as `AmazonS3Builder::from_env` reads them; the bucket comes from the
    // URL.
    let options = std::env::vars_os().filter_map(|(key, value)| {
        let key = key.into_string().ok()?;
        let value = value.into_string().ok()?;
        key.starts_with("AWS_").then_some((key, value))
    });
    let (store, prefix) = parse_url_opts(&parsed, options)?;
    let store: Arc<dyn ObjectStore> = Arc::from(store);
    Ok(if prefix.as_ref().is_empty() {
        store
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    })
}

#[cfg(test)]
mod tests {
    use object_store::{ObjectStoreExt, path::Path};

    use super::*;

    #[tokio::test]
    async fn memory_urls_open_an_empty_store() {
        for url in ["memory://", "memory:", "memory:///"] {
            let store = from_url(url).unwrap_or_else(|err| panic!("{url}: {err}"));
            store.put(&Path::from("a"), "x".into()).await.unwrap();
        }
    }

    #[test]
    fn other_schemes_are_refused() {
        for url in ["gs://bucket", "https://example.com/x", "files", "", "s3://"] {
            assert!(from_url(url).is_err(), "{url}");
        }
    }

    #[test]
    fn an_s3_url_with_a_prefix_opens() {
        // Built only: nothing is sent until the store is used.
        for url in [
            "s3://bucket",
            "s3://bucket/some/prefix",
            "s3://bucket/prefix/",
        ] {
            from_url(url).unwrap_or_else(|err| panic!("{url}: {err}"));
        }
    }
}
