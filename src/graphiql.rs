//! GraphiQL, served from the binary: `GET /graphql` (for a browser) gives the page, `/graphiql/*`
//! its files. Nothing loads from another origin, so it works offline and on an intranet; the
//! files are production bundles that `build.rs` makes from the versions `web/graphiql` pins.
use axum::{
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};

mod assets {
    include!(concat!(env!("OUT_DIR"), "/graphiql_assets.rs"));
}

/// The page and its files may load only from this server. Monaco (GraphiQL's editor) sets styles
/// from script, hence `'unsafe-inline'` for styles alone; no inline script runs. The page talks
/// to the API over HTTP and the WebSocket, same origin. It may not be framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
font-src 'self' data:; img-src 'self' data:; connect-src 'self'; worker-src 'self'; \
frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Palaver · GraphiQL</title>
<link rel="stylesheet" href="/graphiql/graphiql.css">
<style>body { margin: 0; } #graphiql { height: 100vh; }</style>
<script src="/graphiql/graphiql.js" defer></script>
</head>
<body>
<div id="graphiql" data-endpoint="/graphql" data-subscription-endpoint="/graphql/ws">Loading GraphiQL…</div>
</body>
</html>
"#;

/// What a binary built without npm serves instead.
const NOT_BUILT: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Palaver · GraphiQL not built</title></head>
<body>
<h1>GraphiQL is not built into this server</h1>
<p>Its files are bundled when the server is compiled, with npm. Install Node.js and npm, then build
again (<code>cargo build --release</code> runs <code>npm ci</code> in <code>web/graphiql</code>).</p>
<p>The API itself works: POST GraphQL requests to <code>/graphql</code> with
<code>Authorization: Bearer &lt;token&gt;</code>, and subscribe over the WebSocket at
<code>/graphql/ws</code>.</p>
</body>
</html>
"#;

/// Whether the binary holds GraphiQL's files.
fn built() -> bool {
    !assets::ASSETS.is_empty()
}

/// The GraphiQL page.
pub fn page() -> Response {
    let html = if built() { PAGE } else { NOT_BUILT };
    (
        [(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        )],
        Html(html),
    )
        .into_response()
}

/// One of GraphiQL's files. They change with the binary only, so a browser revalidates rather than
/// keeping an old one after an upgrade.
pub async fn asset(Path(name): Path<String>) -> Response {
    let Some((_, media, bytes)) = assets::ASSETS.iter().find(|(file, _, _)| *file == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(media)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
        ],
        *bytes,
    )
        .into_response()
}
