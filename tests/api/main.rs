//! Black-box tests: each starts the real server on a free port with its own database and talks to
//! it as clients do, over HTTP and WebSocket. Set `PALAVER_TEST_DATABASE_URL` (a PostgreSQL URL)
//! and `PALAVER_TEST_REDIS_URL` to run the same tests against PostgreSQL and Redis.
mod helpers;

mod audit;
mod auth;
mod authorization;
mod authorization_matrix;
mod bad_input;
mod bad_input_corpus;
mod batching;
mod blocking;
mod conversations;
mod cors_and_links;
mod durability;
mod files;
mod graphiql;
mod graphql_over_http;
mod http_subscriptions;
mod limits;
mod mark_unread;
mod messages;
mod nodes;
mod notifications;
mod ordering;
mod pagination;
mod persisted_documents;
mod plans;
mod presence;
mod rate_limits;
mod reactions;
mod resilience;
mod rooms;
mod routing;
mod scale_out;
mod schema;
mod security_headers;
mod sessions;
mod subscriptions;
mod threads;
mod typing;
mod websockets;
