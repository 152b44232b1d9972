//! Palaver: a real-time chat backend served as a GraphQL API with subscriptions.
//!
//! Data flows one way: `http` → `graphql` → `chat` (domain) → `entity` (tables), and
//! `chat` → `events` → subscriptions.
pub mod auth;
pub mod chat;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod files;
pub mod graphql;
pub mod http;
pub mod ids;
pub mod telemetry;

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicU64},
};

use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;

pub use config::Config;

/// What every request handler may reach: the database, the event bus, the file store, and the
/// settings.
#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    pub bus: events::EventBus,
    pub files: Arc<files::Files>,
    pub config: Arc<Config>,
    /// SQL statements executed since start; exported on `/metrics`.
    pub statements: Arc<AtomicU64>,
}

/// A built server, bound to its address, ready to run.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
}

impl Application {
    /// Connects the database (running pending migrations), starts the event bus and binds the port.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let statements = Arc::new(AtomicU64::new(0));
        let mut db = db::connect(&config.database_url).await?;
        db::count_statements(&mut db, statements.clone());
        let bus =
            events::EventBus::start(config.redis_url.as_deref(), &config.redis_channel).await?;
        let files = Arc::new(files::Files::open(&config, &db).await?);
        spawn_orphan_sweep(files.clone(), db.clone());
        let listener = TcpListener::bind(config.addr).await?;
        let state = AppState {
            db,
            bus,
            files,
            config: Arc::new(config),
            statements,
        };
        let router = http::router(state);
        Ok(Self { listener, router })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!("listening on http://{}", self.listener.local_addr()?);
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    }
}

/// Deletes stored files left without a message by a crash between storing and committing (see
/// `files`). In the background: a large bucket must not delay the start.
fn spawn_orphan_sweep(files: Arc<files::Files>, db: DatabaseConnection) {
    tokio::spawn(async move {
        match files.sweep_orphans(&db).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "swept orphaned files"),
            Err(err) => tracing::warn!(error = %err, "orphaned-file sweep failed"),
        }
    });
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
