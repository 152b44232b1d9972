//! Persisted documents: a request may name its document by hash instead of sending its text.
//!
//! - Automatic persisted queries (Apollo's `extensions.persistedQuery { version: 1, sha256Hash }`):
//!   a client sends the hash alone; when the server does not know it the answer is
//!   PERSISTED_QUERY_NOT_FOUND, and the client sends hash and text once, which the server checks
//!   and keeps. Kept texts are bounded in number and length (least recently used go first), so a
//!   client registering ever new documents costs the others their hits, never memory.
//! - Trusted documents (`PALAVER_TRUSTED_DOCUMENTS`, a manifest in Apollo's persisted query list
//!   format): only the listed documents run, named by id or sent as their exact text; nothing is
//!   registered at run time. For production front ends whose operations are all known at build
//!   time.
//!
//! async-graphql's `ApolloPersistedQueries` is a schema extension (the API runs without any, see
//! `api`), and answers a miss without `extensions.code`, which Apollo Client looks for.
use std::{
    collections::{HashMap, HashSet},
    num::NonZeroUsize,
    sync::{Arc, Mutex},
};

use async_graphql::{Request, ServerError};
use sha2::{Digest, Sha256};

use crate::lock;

/// Most documents kept for automatic persisted queries.
const KEPT_HASHES: usize = 1024;
/// Longest text kept for automatic persisted queries (bytes); a longer document is still run when
/// sent in full, but not kept under its hash.
const KEPT_TEXT: usize = 16 * 1024;

/// The document of a persisted request, once known.
pub(super) struct Persisted {
    /// Texts registered by clients, by their SHA-256; none in trusted mode.
    automatic: Mutex<lru::LruCache<[u8; 32], Arc<str>>>,
    trusted: Option<TrustedDocuments>,
}

/// Apollo's `extensions.persistedQuery`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PersistedQuery {
    version: u32,
    sha256_hash: String,
}

impl Persisted {
    pub(super) fn new(trusted: Option<TrustedDocuments>) -> Self {
        Self {
            automatic: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(KEPT_HASHES).unwrap_or(NonZeroUsize::MIN),
            )),
            trusted,
        }
    }

    /// Puts the document a request names by hash into its `query`, checks a text sent with a
    /// hash against it, and, in trusted mode, refuses any document not listed. A request with
    /// neither hash nor trusted list passes untouched.
    pub(super) fn resolve(&self, request: &mut Request) -> Result<(), ServerError> {
        // Left in the request until it is resolved: a request that failed here fails the same
        // way when it is executed.
        let persisted = match request.extensions.0.get("persistedQuery") {
            None => None,
            Some(value) => Some(
                serde_json::to_value(value)
                    .ok()
                    .and_then(|value| serde_json::from_value::<PersistedQuery>(value).ok())
                    .ok_or_else(|| {
                        coded(
                            "extensions.persistedQuery must be { version: 1, sha256Hash: \"<hex>\" }",
                            "BAD_USER_INPUT",
                        )
                    })?,
            ),
        };
        if let Some(persisted) = &persisted
            && persisted.version != 1
        {
            return Err(coded(
                "only version 1 of persisted queries is supported",
                "PERSISTED_QUERY_NOT_SUPPORTED",
            ));
        }
        let resolved = match (&self.trusted, persisted) {
            (Some(trusted), Some(persisted)) => {
                let listed = trusted.by_id.get(&persisted.sha256_hash).ok_or_else(|| {
                    coded(
                        "no trusted document has this id",
                        "PERSISTED_QUERY_NOT_IN_LIST",
                    )
                })?;
                if !request.query.is_empty() && request.query != **listed {
                    return Err(coded(
                        "the text sent differs from the trusted document with this id",
                        "BAD_USER_INPUT",
                    ));
                }
                request.query = listed.to_string();
                Ok(())
            }
            (Some(trusted), None) => {
                if trusted.bodies.contains(request.query.as_str()) {
                    Ok(())
                } else {
                    Err(coded(
                        "this server runs trusted documents only, and this one is not listed",
                        "QUERY_NOT_IN_SAFELIST",
                    ))
                }
            }
            (None, Some(persisted)) => self.automatic(request, &persisted.sha256_hash),
            (None, None) => Ok(()),
        };
        if resolved.is_ok() {
            request.extensions.0.remove("persistedQuery");
        }
        resolved
    }

    fn automatic(&self, request: &mut Request, hash: &str) -> Result<(), ServerError> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(hash, &mut key)
            .map_err(|_| coded("sha256Hash must be 64 hexadecimal digits", "BAD_USER_INPUT"))?;
        if request.query.is_empty() {
            let text = lock(&self.automatic).get(&key).cloned();
            return match text {
                Some(text) => {
                    request.query = text.to_string();
                    Ok(())
                }
                // Apollo Client's persisted query link retries with the full text on this
                // message or this code.
                None => Err(coded("PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND")),
            };
        }
        if Sha256::digest(request.query.as_bytes()).as_slice() != key {
            return Err(coded(
                "provided sha256Hash does not match the query",
                "BAD_USER_INPUT",
            ));
        }
        if request.query.len() <= KEPT_TEXT {
            lock(&self.automatic).put(key, request.query.as_str().into());
        }
        Ok(())
    }
}

fn coded(message: &str, code: &str) -> ServerError {
    crate::error::request_error(code, message)
}

/// The documents a server in trusted mode runs, read from a manifest in Apollo's persisted query
/// list format (`{"format": "apollo-persisted-query-manifest", "version": 1, "operations": [{"id",
/// "body", …}]}`), as `generate-persisted-query-manifest` writes it.
#[derive(Clone)]
pub struct TrustedDocuments {
    by_id: Arc<HashMap<String, Arc<str>>>,
    bodies: Arc<HashSet<Arc<str>>>,
}

impl std::fmt::Debug for TrustedDocuments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustedDocuments({} documents)", self.by_id.len())
    }
}

impl TrustedDocuments {
    /// Reads a manifest's text.
    pub fn parse(manifest: &str) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Manifest {
            format: String,
            version: u32,
            operations: Vec<Operation>,
        }
        #[derive(serde::Deserialize)]
        struct Operation {
            id: String,
            body: String,
        }
        let manifest: Manifest = serde_json::from_str(manifest)
            .map_err(|err| format!("not a persisted query manifest: {err}"))?;
        if manifest.format != "apollo-persisted-query-manifest" || manifest.version != 1 {
            return Err(format!(
                "format {:?} version {} is not \"apollo-persisted-query-manifest\" version 1",
                manifest.format, manifest.version
            ));
        }
        let mut by_id = HashMap::new();
        let mut bodies = HashSet::new();
        for operation in manifest.operations {
            let body: Arc<str> = operation.body.into();
            bodies.insert(body.clone());
            if by_id.insert(operation.id.clone(), body).is_some() {
                return Err(format!("the id {:?} is listed twice", operation.id));
            }
        }
        Ok(Self {
            by_id: Arc::new(by_id),
            bodies: Arc::new(bodies),
        })
    }
}

impl std::str::FromStr for TrustedDocuments {
    type Err = String;

    /// Reads the manifest at a path (the setting names a file).
    fn from_str(path: &str) -> Result<Self, Self::Err> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("reading the trusted documents at {path}: {err}"))?;
        Self::parse(&text).map_err(|err| format!("{path}: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(text: &str) -> String {
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    fn by_hash(hash: &str, text: &str) -> Request {
        let mut request = Request::new(text);
        request.extensions.0.insert(
            "persistedQuery".into(),
            async_graphql::Value::from_json(serde_json::json!({
                "version": 1, "sha256Hash": hash
            }))
            .expect("a value"),
        );
        request
    }

    fn code(error: &ServerError) -> String {
        error
            .extensions
            .as_ref()
            .and_then(|ext| ext.get("code"))
            .map(|code| code.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn the_least_recently_used_hash_goes_first_past_the_bound() {
        let persisted = Persisted::new(None);
        let texts: Vec<String> = (0..=KEPT_HASHES)
            .map(|i| format!("{{ a{i}: me {{ id }} }}"))
            .collect();
        for text in &texts[..KEPT_HASHES] {
            persisted
                .resolve(&mut by_hash(&hash(text), text))
                .expect("kept");
        }
        // Used again: the second is now the oldest.
        persisted
            .resolve(&mut by_hash(&hash(&texts[0]), ""))
            .expect("found");
        let last = &texts[KEPT_HASHES];
        persisted
            .resolve(&mut by_hash(&hash(last), last))
            .expect("kept");
        assert!(
            persisted
                .resolve(&mut by_hash(&hash(&texts[0]), ""))
                .is_ok()
        );
        let gone = persisted
            .resolve(&mut by_hash(&hash(&texts[1]), ""))
            .unwrap_err();
        assert_eq!(code(&gone), "\"PERSISTED_QUERY_NOT_FOUND\"");
        assert_eq!(lock(&persisted.automatic).len(), KEPT_HASHES);
    }

    #[test]
    fn a_text_longer_than_the_bound_passes_but_is_not_kept() {
        let persisted = Persisted::new(None);
        let long = format!("{{ me {{ id }} }}{}", " ".repeat(KEPT_TEXT));
        let mut request = by_hash(&hash(&long), &long);
        persisted.resolve(&mut request).expect("passes");
        assert_eq!(request.query, long);
        let missing = persisted
            .resolve(&mut by_hash(&hash(&long), ""))
            .unwrap_err();
        assert_eq!(code(&missing), "\"PERSISTED_QUERY_NOT_FOUND\"");
    }

    #[test]
    fn a_manifest_of_another_format_or_with_a_repeated_id_is_refused() {
        assert!(TrustedDocuments::parse(r#"{"format":"x","version":1,"operations":[]}"#).is_err());
        let twice = r#"{"format":"apollo-persisted-query-manifest","version":1,"operations":[
            {"id":"a","body":"{ me { id } }","name":"A","type":"query"},
            {"id":"a","body":"{ me { username } }","name":"B","type":"query"}]}"#;
        assert!(TrustedDocuments::parse(twice).is_err());
    }
}
