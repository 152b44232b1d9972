//! Palaver: a real-time chat backend served as a GraphQL API with subscriptions.
//!
//! Data flows one way: `http` → `graphql` → `chat` (domain) → `entity` (tables), and
//! `chat` → `events` → subscriptions.
pub mod auth;
pub mod chat;
pub mod config;
pub mod db;
pub mod delivery;
pub mod error;
pub mod events;
pub mod files;
pub mod graphiql;
pub mod graphql;
pub mod http;
pub mod ids;
pub mod limits;
pub mod shared_state;
pub mod store;
pub mod telemetry;
pub mod text;

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;

pub use config::Config;

/// What every request handler may reach: the database, the event bus, the file store, and the
/// settings.
///
/// Cheap to clone: one pointer. Every connection's tasks hold clones, so its size is paid per
/// connection, several times over; the fields live behind the pointer in [`State`].
#[derive(Clone)]
pub struct AppState(Arc<State>);

impl std::ops::Deref for AppState {
    type Target = State;
    fn deref(&self) -> &State {
        &self.0
    }
}

/// What [`AppState`] points at.
pub struct State {
    pub db: DatabaseConnection,
    pub bus: events::EventBus,
    /// This instance's ordered feed of conversation changes (see `delivery`).
    pub delivery: Arc<delivery::Delivery>,
    pub files: Arc<files::Files>,
    pub config: Arc<Config>,
    /// This instance's counters, exported on `/metrics`.
    pub metrics: telemetry::Metrics,
    pub typing: chat::typing::Typing,
    pub presence: chat::presence::Presence,
    /// Rate-limit buckets (shared through Redis when it is configured).
    pub limits: limits::Limiter,
    /// Identifies this deployment's data; event cursors carry it, so that a cursor from other data
    /// is recognised (RESYNC_REQUIRED) instead of silently replaying the wrong things.
    pub epoch: i64,
    /// Cancelled when the server begins to shut down; live connections and background tasks
    /// end on it.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The background tasks (sweepers, heartbeats, the Redis bridge), so that shutdown can wait
    /// for them to end.
    pub tasks: tokio_util::task::TaskTracker,
    /// The WebSocket connections, so that shutdown can wait for them to close.
    pub connections: tokio_util::task::TaskTracker,
    /// The domain: every rule of who may do what, over the store, the bus and the file store.
    pub chat: chat::Chat,
    /// Tokens resolved recently (see `auth::cache`).
    pub tokens: Arc<auth::TokenCache>,
}

/// Locks a mutex, carrying on past a panic of an earlier holder: what these mutexes guard (sets,
/// slots, timestamps) stays usable.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads through a read-write lock, carrying on past a panic of an earlier holder (as [`lock`]).
pub(crate) fn read<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes through a read-write lock, carrying on past a panic of an earlier holder (as [`lock`]).
pub(crate) fn write<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Most tokens an instance keeps resolved in memory (about 100 bytes each).
const TOKEN_CACHE_CAPACITY: usize = 100_000;

/// A built server, bound to its address, ready to run.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
}

impl Application {
    /// Connects the database (running pending migrations), starts the event bus and binds the port.
    pub async fn build(mut config: Config) -> anyhow::Result<Self> {
        // `REDIS_URL=` (set but empty) means no Redis, as unset does.
        config.redis_url = config.redis_url.filter(|url| !url.trim().is_empty());
        let metrics = telemetry::Metrics::new();
        let statements = metrics.statements.clone();
        let mut db = db::connect_capped(&config.database_url, config.sqlite_max_bytes)
            .await
            .context("opening the database")?;
        db::count_statements(&mut db, statements.clone());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let tasks = tokio_util::task::TaskTracker::new();
        // One circuit for every use of Redis, so that an outage is noticed and logged once.
        let breaker = events::breaker::Breaker::default();
        let bus = events::EventBus::start_with(
            config.redis_url.as_deref(),
            &config.redis_channel,
            breaker.clone(),
            events::Counters {
                received: metrics.bus_received.clone(),
                delivered: metrics.bus_delivered.clone(),
            },
            &tasks,
            shutdown.clone(),
        )
        .await
        .context("connecting to Redis")?;
        let epoch = db::setting_or_init(&db, "cursor_epoch", || {
            // A positive number below 2^53, so that it survives a trip through JSON clients.
            (rand::random::<u64>() >> 11).max(1).to_string()
        })
        .await
        .context("writing the database's settings")?
        .parse::<i64>()?;
        let files = Arc::new(
            files::Files::open(&config, &db)
                .await
                .context("opening the file store")?,
        );
        spawn_orphan_sweep(files.clone(), db.clone(), &tasks, shutdown.clone());
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("listening on {}", config.addr))?;
        let shared = match &config.redis_url {
            Some(url) => Some(
                shared_state::SharedState::connect(url, &config.redis_channel, breaker)
                    .await
                    .context("connecting to Redis")?,
            ),
            None => None,
        };
        let writer = store::writer::Writer::start(db.clone(), bus.clone(), {
            let url = config.database_url.clone();
            let max_bytes = config.sqlite_max_bytes;
            let statements = statements.clone();
            std::sync::Arc::new(move || {
                let url = url.clone();
                let statements = statements.clone();
                Box::pin(async move {
                    let mut db = db::connect_writer(&url, max_bytes).await?;
                    db::count_statements(&mut db, statements);
                    Ok(db)
                })
            })
        });
        let log_reader = db::connect_log_reader(&config.database_url)
            .await
            .context("opening the database")?;
        let store = store::Store::new(db.clone(), writer);
        let delivery = delivery::Delivery::start(
            store.reading_from(log_reader),
            bus.clone(),
            &tasks,
            shutdown.clone(),
        )
        .await
        .context("reading the change log")?;
        let tokens = Arc::new(auth::TokenCache::new(
            TOKEN_CACHE_CAPACITY,
            std::time::Duration::from_secs(config.token_cache_secs),
        ));
        bus.observe({
            let tokens = tokens.clone();
            move |event| match event {
                // Sessions ended here or on another instance.
                events::Event::SessionsEnded { user_id, ended } => tokens.forget(*user_id, *ended),
                // The bus may have lost an end while Redis was away.
                events::Event::Resync => tokens.clear(),
                _ => {}
            }
        });
        // With Redis, a subscription to all of a user's conversations follows each one's channel.
        // The lister holds the pool alone, not the store: the store's writer holds the bus, and a
        // bus holding the store would keep both (and the pool's connections) alive for ever.
        bus.list_memberships({
            let db = db.clone();
            move |user_id| {
                let db = db.clone();
                async move { Ok(chat::conversations::ids_of_member(&db, user_id).await?) }
            }
        });
        let limits = limits::Limiter::new(shared.clone());
        let chat = chat::Chat {
            store,
            events: bus.clone(),
            files: files.clone(),
            settings: Arc::new(chat::Settings::from_config(&config)),
            backlog: Arc::new(chat::notifications::Backlog::new(
                tasks.clone(),
                shutdown.clone(),
            )),
        };
        let presence = chat::presence::Presence::new(
            chat.store.clone(),
            chat.events.clone(),
            std::time::Duration::from_millis(config.presence_grace_ms),
            shared.clone(),
        );
        let typing = chat::typing::Typing::new(
            chat.store.clone(),
            chat.events.clone(),
            shared.clone(),
            limits.clone(),
        );
        let state = AppState(Arc::new(State {
            chat,
            tokens,
            db,
            bus,
            delivery,
            presence,
            files,
            limits: limits.clone(),
            config: Arc::new(config),
            metrics,
            typing,
            epoch,
            shutdown,
            tasks,
            connections: Default::default(),
        }));
        chat::notifications::resume_backlog(&state.chat).await?;
        state
            .typing
            .spawn_sweeper(&state.tasks, state.shutdown.clone());
        state
            .presence
            .spawn_heartbeat(&state.tasks, state.shutdown.clone());
        let router = http::router(state.clone());
        Ok(Self {
            listener,
            router,
            state,
        })
    }

    /// The background tasks; empty and closed once `run_until_stopped` has returned.
    pub fn background_tasks(&self) -> tokio_util::task::TaskTracker {
        self.state.tasks.clone()
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; then stops accepting, finishes in-flight requests and
    /// closes WebSockets with 1001 (going away) before returning.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!("listening on http://{}", self.listener.local_addr()?);
        let token = self.state.shutdown.clone();
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            token.cancel();
        })
        .await?;
        let connections = self.state.connections.clone();
        connections.close();
        if tokio::time::timeout(std::time::Duration::from_secs(10), connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("some WebSocket connections did not close in time");
        }
        let tasks = self.state.tasks.clone();
        tasks.close();
        if tokio::time::timeout(std::time::Duration::from_secs(10), tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some background tasks did not end in time");
        }
        Ok(())
    }
}

/// Deletes stored files left without a message by a crash between storing and committing (see
/// `files`). In the background: a large bucket must not delay the start. Abandoned at shutdown;
/// the next start sweeps again.
fn spawn_orphan_sweep(
    files: Arc<files::Files>,
    db: DatabaseConnection,
    tasks: &tokio_util::task::TaskTracker,
    shutdown: tokio_util::sync::CancellationToken,
) {
    tasks.spawn(async move {
        let swept = tokio::select! {
            swept = files.sweep_orphans(&db) => swept,
            () = shutdown.cancelled() => return,
        };
        match swept {
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
