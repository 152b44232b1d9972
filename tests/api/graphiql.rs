//! GraphiQL in a browser: Debian's Chromium, driven by `tests/browser/graphiql.mjs`
//! (playwright-core, installed from its lock file here when missing), opens the page this server
//! serves and uses it as a person would. Needs Node.js and npm; installs Debian's `chromium` when
//! `/usr/bin/chromium` is missing.
use std::path::PathBuf;

use crate::helpers::{debian_chromium, npm_ci, spawn_app};

#[tokio::test]
async fn graphiql_loads_from_the_server_alone_runs_a_query_and_receives_a_subscription_event() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    npm_ci(&dir, "playwright-core").await;
    debian_chromium().await;

    let run = tokio::process::Command::new("node")
        .arg("graphiql.mjs")
        .current_dir(&dir)
        .env("PALAVER_URL", app.url(""))
        .env("PALAVER_TOKEN", &bob.token)
        .env("PALAVER_SENDER_TOKEN", &alice.token)
        .env("PALAVER_CONVERSATION", &conversation)
        .output()
        .await
        .expect("node runs (install Node.js)");

    assert!(
        run.status.success(),
        "the browser test failed:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}
