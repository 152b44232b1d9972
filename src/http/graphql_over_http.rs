//! GraphQL over HTTP as its specification words it: which media type a response is sent in
//! (`Accept`), what a GET request may carry and run, and how a request error (one raised before
//! execution: a body, a document or variables that cannot be used) is answered, so that clients
//! that follow the specification (Apollo Client among them) read every answer the same way.
use async_graphql::{BatchResponse, ServerError, Value};
use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

/// The media types a GraphQL response is sent in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MediaType {
    /// `application/graphql-response+json`: the status code tells a request error (4xx) from an
    /// executed one (2xx).
    GraphQLResponseJson,
    /// `application/json`, the legacy type: every well-formed request is answered 200, as
    /// clients from before the specification expect.
    Json,
}

impl MediaType {
    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            MediaType::GraphQLResponseJson => "application/graphql-response+json; charset=utf-8",
            MediaType::Json => "application/json; charset=utf-8",
        })
    }
}

/// What a request's `Accept` header asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Accept {
    /// The GraphQL media type to answer in.
    pub media: MediaType,
    /// Whether the client wants a page rather than a GraphQL response: it names `text/html` and
    /// neither GraphQL media type, as a browser navigating to the URL does.
    pub html: bool,
}

impl Accept {
    /// Reads `Accept`. `application/graphql-response+json` is chosen when the client names it at
    /// least as high as `application/json`; anything else (no header, `*/*`, or only types the
    /// server does not produce) gets `application/json`, which the specification makes the
    /// default for clients that do not ask for the newer type.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut graphql_response = 0.0f32;
        let mut json = 0.0f32;
        let mut html = 0.0f32;
        for value in headers.get_all(header::ACCEPT) {
            let Ok(value) = value.to_str() else {
                continue;
            };
            for range in value.split(',') {
                let mut parts = range.split(';');
                let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0)
                    .clamp(0.0, 1.0);
                match media.as_str() {
                    "application/graphql-response+json" => {
                        graphql_response = graphql_response.max(q);
                    }
                    "application/json" => json = json.max(q),
                    "text/html" => html = html.max(q),
                    _ => {}
                }
            }
        }
        let media = if graphql_response > 0.0 && graphql_response >= json {
            MediaType::GraphQLResponseJson
        } else {
            MediaType::Json
        };
        Accept {
            media,
            html: html > 0.0 && graphql_response == 0.0 && json == 0.0,
        }
    }
}

/// Whether `Content-Type` names a body this endpoint reads: JSON, or a multipart upload (the
/// GraphQL multipart request specification). Anything else, a missing header included, is
/// refused with 415 before the body is read.
pub(crate) fn readable_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "multipart/form-data"
}

/// A response with one GraphQL error and no `data`: a request error, or a refusal made before
/// the request reached the schema.
pub(crate) fn error_response(
    media: MediaType,
    status: StatusCode,
    code: &str,
    message: String,
) -> Response {
    error_response_with(
        media,
        status,
        serde_json::json!({ "message": message, "extensions": { "code": code } }),
    )
}

/// A response with one GraphQL error (its `message` and `extensions`, given whole) and no `data`.
pub(crate) fn error_response_with(
    media: MediaType,
    status: StatusCode,
    error: serde_json::Value,
) -> Response {
    json_response(media, status, &serde_json::json!({ "errors": [error] }))
}

fn json_response(media: MediaType, status: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(header::CONTENT_TYPE, media.content_type())],
            bytes,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "a GraphQL response could not be serialised");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Whether a response answers a request error: one raised before execution (parsing, validation,
/// variable coercion, the shape limits). Execution always yields `data` (null at worst) for
/// errors that carry the path of the field they arose in; a request error never reached a field,
/// so none of its errors has a path.
fn is_request_error(response: &async_graphql::Response) -> bool {
    response.data == Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

/// A request error as sent: its errors (and extensions), never a `data` entry.
#[derive(serde::Serialize)]
struct RequestError<'a> {
    errors: &'a [ServerError],
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    extensions: &'a std::collections::BTreeMap<String, Value>,
}

/// The HTTP answer to an executed request, in the negotiated media type. A single request that
/// failed before execution is sent without `data`, with 400 as `application/graphql-response+json`
/// and 200 as `application/json`; a batch is always 200, each of its answers in its place.
pub(crate) fn graphql_response(batch: BatchResponse, media: MediaType) -> Response {
    let mut response = match &batch {
        BatchResponse::Single(one) if is_request_error(one) => {
            let status = match media {
                MediaType::GraphQLResponseJson => StatusCode::BAD_REQUEST,
                MediaType::Json => StatusCode::OK,
            };
            let body = RequestError {
                errors: &one.errors,
                extensions: &one.extensions,
            };
            json_response(media, status, &body)
        }
        _ => json_response(media, StatusCode::OK, &batch),
    };
    let headers = response.headers_mut();
    if batch.is_ok()
        && let Some(value) = batch.cache_control().value()
        && let Ok(value) = HeaderValue::from_str(&value)
    {
        headers.insert(header::CACHE_CONTROL, value);
    }
    headers.extend(batch.http_headers());
    response
}

/// The parameters of a GraphQL GET request, from its query string.
#[derive(serde::Deserialize)]
pub(crate) struct GetParams {
    query: Option<String>,
    #[serde(rename = "operationName")]
    operation_name: Option<String>,
    /// JSON text of a map.
    variables: Option<String>,
    /// JSON text of a map.
    extensions: Option<String>,
}

impl GetParams {
    /// Reads the query string; a message for the client when it is not a GraphQL request.
    pub fn parse(uri: &axum::http::Uri) -> Result<Self, String> {
        axum::extract::Query::try_from_uri(uri)
            .map(|axum::extract::Query(params)| params)
            .map_err(|err| err.body_text())
    }

    /// The GraphQL request the parameters make. `variables` and `extensions` must be JSON maps
    /// (or absent).
    pub fn into_request(self) -> Result<async_graphql::Request, String> {
        let mut request = async_graphql::Request::new(self.query.unwrap_or_default());
        request.operation_name = self.operation_name;
        if let Some(variables) = self.variables {
            request.variables = serde_json::from_str(&variables)
                .map_err(|err| format!("`variables` must be a JSON object: {err}"))?;
        }
        if let Some(extensions) = self.extensions {
            request.extensions = serde_json::from_str(&extensions)
                .map_err(|err| format!("`extensions` must be a JSON object: {err}"))?;
        }
        Ok(request)
    }
}

/// Whether a request names no document: no `query`, and no persisted document in its extensions
/// that could stand for one. Such a request is malformed (400 whatever the media type), not a
/// document that failed to parse.
pub(crate) fn lacks_document(request: &async_graphql::Request) -> bool {
    request.query.is_empty() && !request.extensions.contains_key("persistedQuery")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> Accept {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        Accept::from_headers(&headers)
    }

    #[test]
    fn the_graphql_media_type_is_chosen_only_when_asked_for_first() {
        use MediaType::*;
        assert_eq!(Accept::from_headers(&HeaderMap::new()).media, Json);
        assert_eq!(accept("*/*").media, Json);
        assert_eq!(accept("application/json").media, Json);
        assert_eq!(
            accept("application/graphql-response+json").media,
            GraphQLResponseJson
        );
        assert_eq!(
            accept("application/graphql-response+json,application/json;q=0.9").media,
            GraphQLResponseJson
        );
        assert_eq!(
            accept("application/json, application/graphql-response+json;q=0.5").media,
            Json
        );
        assert_eq!(accept("application/graphql-response+json;q=0").media, Json);
        assert_eq!(accept("text/plain").media, Json);
    }

    #[test]
    fn only_a_browser_asking_for_html_first_is_given_a_page() {
        assert!(accept("text/html,application/xhtml+xml,*/*;q=0.8").html);
        assert!(!accept("*/*").html);
        assert!(!accept("text/html, application/json").html);
        assert!(!accept("text/html;q=0").html);
        assert!(!Accept::from_headers(&HeaderMap::new()).html);
    }
}
